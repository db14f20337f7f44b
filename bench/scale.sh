#!/usr/bin/env bash
# Runs the partisan_peer `scale` example (N live members in one process) with one BEAM member
# (bench/bench_scale.erl) that member 0 joins and that originates every other broadcast.
# Usage: bench/scale.sh [scale options], e.g. bench/scale.sh --nodes 300 --out bench/results/scale-300.md
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
EBIN="$ROOT/_build/default/lib/partisan/ebin"
[ -f "$EBIN/partisan.beam" ] || (cd "$ROOT" && rebar3 compile)
(cd "$ROOT" && cargo build --release --locked -q -p partisan_peer --example scale)
# Wherever cargo puts it (CARGO_TARGET_DIR, .cargo/config.toml), not always target/.
TARGET_DIR="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps --locked \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench_scale.XXXXXX")"
BEAM_PID=""
cleanup() {
    # The BEAM node halts when its stdin closes; by pid if it has not within 10 s.
    exec {HOLD}>&- 2>/dev/null || true
    if [ -n "$BEAM_PID" ]; then
        for _ in $(seq 1 100); do kill -0 "$BEAM_PID" 2>/dev/null || break; sleep 0.1; done
        kill "$BEAM_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
erlc -pa "$EBIN" -o "$WORK" "$HERE/bench_scale.erl"
mkfifo "$WORK/stdin"
erl -noshell -name "scale_beam_$$@127.0.0.1" -connect_all false -pa "$EBIN" -pa "$WORK" \
    -eval 'bench_scale:main()' < "$WORK/stdin" > "$WORK/beam.log" 2>&1 &
BEAM_PID=$!
exec {HOLD}> "$WORK/stdin"
SPEC=""
for _ in $(seq 1 600); do
    SPEC="$(sed -n 's/^BEAM //p' "$WORK/beam.log" | head -1)"
    [ -n "$SPEC" ] && break
    kill -0 "$BEAM_PID" 2>/dev/null || break
    sleep 0.1
done
[ -n "$SPEC" ] || { echo "bench/scale.sh: the BEAM node did not start:" >&2; cat "$WORK/beam.log" >&2; exit 1; }
# A joined member holds about 27 descriptors: 1,000 members need about 28,000, above the usual
# 20,000 per process. Raise the limit for the example (root may raise the hard limit too); what
# it got is in the report, and the run stops where the descriptors do.
WANT_FDS=65536
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt $WANT_FDS ]; then
    ulimit -Hn $WANT_FDS 2>/dev/null || true
fi
ulimit -n "$( [ "$(ulimit -Hn)" = unlimited ] && echo $WANT_FDS || { h=$(ulimit -Hn); echo $(( h < WANT_FDS ? h : WANT_FDS )); })"
"$TARGET_DIR/release/examples/scale" --beam "$SPEC" "$@"
