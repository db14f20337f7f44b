#!/usr/bin/env bash
# Plots the reports of `make bench-scale` (bench/results/scale-*.md): one PNG of four panels
# beside them, bench/results/scale.png, and the .dat files it is drawn from.
#
#   join            seconds until every member had a neighbour, and until the active views were
#                   one connected, symmetric graph, per run ("N=1000 (687)": the machine stopped
#                   that run at 687 members, see the report)
#   memory, fds     resident KiB and descriptors per joined member, per run
#   RMR             relative message redundancy of each broadcast (1 - 12), per run
#   last delivery   milliseconds from the broadcast to its last delivery, per run (log scale)
#
# Usage: bench/scale_plot.sh [report.md ...] (default: bench/results/scale-*.md). Without gnuplot
# the .dat files are still written and the plot is skipped with a message.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="$HERE/results"
if [ $# -eq 0 ]; then
    # By size, the all-at-once join next to its one-after-another twin.
    set -- $(ls "$OUT"/scale-*.md | sort -t- -k2,2n -k3)
fi

runs=()
labels=()
: > "$OUT/scale-runs.dat"
echo "# run members_joined s_every_member_has_a_neighbour s_one_connected_graph kib_per_member fds_per_member" >> "$OUT/scale-runs.dat"
i=0
for md in "$@"; do
    [ -f "$md" ] || continue
    i=$((i + 1))
    run="$(basename "$md" .md)"
    runs+=("$run")
    labels+=("$(n="${run#scale-}"; echo "N=${n/-all-at-once/ at once}")")
    # Members measured: the header's N, or fewer where the machine stopped the run.
    members="$(sed -n 's/^# Live overlay: \([0-9]*\) members.*/\1/p' "$md")"
    stopped="$(sed -n 's/.*the rest is measured with \([0-9]*\) members.*/\1/p' "$md")"
    [ -n "$stopped" ] && members="$stopped"
    secs() { sed -n "s/^| $1 | \([0-9.]*\) s |.*/\1/p" "$md"; }
    kib="$(sed -n 's/^| resident memory per member, idle \/ joined | [0-9]* KiB \/ \([0-9]*\) KiB |.*/\1/p' "$md")"
    fds="$(sed -n 's/^| descriptors per member, idle \/ joined | [0-9.]* \/ \([0-9.]*\) |.*/\1/p' "$md")"
    label="N=${run#scale-}"; label="${label/-all-at-once/ at once}"
    [ -n "$stopped" ] && label="$label ($stopped)"
    echo "$i \"$label\" $members $(secs 'every member has a neighbour') $(secs 'active views one connected, symmetric graph') $kib $fds" \
        >> "$OUT/scale-runs.dat"
    # Broadcast rows: | # | phase | origin | reached / live (pct) | last delivery | RMR |
    awk -F'|' '/^\| [0-9]+ \| / {
        gsub(/ /, "", $2); ms = $6; gsub(/[ ms]/, "", ms); rmr = $7; gsub(/ /, "", rmr);
        if (ms == "" || ms == "-") ms = "NaN"; if (rmr == "" || rmr == "-") rmr = "NaN";
        print $2, ms, rmr }' "$md" > "$OUT/$run-broadcasts.dat"
done
[ ${#runs[@]} -gt 0 ] || { echo "scale_plot: no reports" >&2; exit 1; }

if ! command -v gnuplot >/dev/null 2>&1; then
    echo "scale_plot: gnuplot not installed: .dat files written to $OUT, plot skipped"
    exit 0
fi
{
    echo "set terminal pngcairo size 1400,900 noenhanced"
    echo "set output 'scale.png'"
    echo "set multiplot layout 2,2 title 'Live HyParView + Plumtree overlay (make bench-scale; N=1000 in two processes)'"
    echo "set grid; set key top left box opaque; set datafile missing 'NaN'; set xtics font ',10'"
    echo "set style data histograms; set style histogram clustered gap 1; set style fill solid 0.7 border -1"
    echo "set title 'join: seconds until'; set ylabel 's'; set yrange [0:*]"
    echo "plot 'scale-runs.dat' using 4:xtic(2) title 'every member has a neighbour', '' using 5 title 'one connected, symmetric graph'"
    echo "set title 'per joined member'; set ylabel 'resident KiB'; set y2label 'descriptors'; set y2tics; set y2range [0:40]"
    echo "plot 'scale-runs.dat' using 6:xtic(2) title 'resident KiB', '' using 7 axes x1y2 title 'descriptors (right axis)'"
    echo "unset y2tics; unset y2label; set key top right"
    echo "set style data linespoints; unset xtics; set xtics 1; set xlabel 'broadcast (1-5 steady, 6-7 right after 20 % stopped, 8-12 after repair)'"
    echo "set title 'relative message redundancy'; set ylabel 'RMR'; set yrange [0:*]"
    printf "plot "
    sep=""
    for k in "${!runs[@]}"; do printf "%s'%s' using 1:3 title '%s'" "$sep" "${runs[$k]}-broadcasts.dat" "${labels[$k]}"; sep=", "; done
    echo
    echo "set title 'last delivery'; set ylabel 'ms'; set logscale y; set yrange [1:20000]; set key bottom right"
    printf "plot "
    sep=""
    for k in "${!runs[@]}"; do printf "%s'%s' using 1:2 title '%s'" "$sep" "${runs[$k]}-broadcasts.dat" "${labels[$k]}"; sep=", "; done
    echo
    echo "unset multiplot"
} > "$OUT/scale.gp"
(cd "$OUT" && gnuplot scale.gp)
echo "scale_plot: $OUT/scale.png"
