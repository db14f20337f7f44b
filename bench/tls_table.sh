#!/usr/bin/env bash
# The table of bench/tls.sh from its two throughput reports: tls_table.sh PLAIN.md TLS.md
# Rows of a report: | payload | senders | W | <one column per transport: median (min–max)> | ...
# The columns are found by their names in the header row ("partisan P=1[ TLS] msg/s",
# "disterl[ TLS] msg/s"): the report has more transports than these two, in an order that
# changes with the options of the run.
set -euo pipefail
rows() { # file -> "payload xsenders|partisan|disterl" (msg/s medians)
    awk -F'|' '
        /^\| payload \|/ {
            for (i = 2; i < NF; i++) {
                name = $i; gsub(/^ +| +$/, "", name)
                if (name ~ /^partisan P=1( TLS)? msg\/s$/) p = i
                if (name ~ /^disterl( TLS)? msg\/s$/) d = i
            }
            next
        }
        p && d && /^\| [0-9]+ [KMGi]*B \| [0-9]+ \|/ {
            payload = $2; gsub(/^ +| +$/, "", payload)
            senders = $3; gsub(/ /, "", senders)
            pm = $p; sub(/ *\(.*/, "", pm); gsub(/[ ,]/, "", pm)
            dm = $d; sub(/ *\(.*/, "", dm); gsub(/[ ,]/, "", dm)
            print payload " x" senders "|" pm "|" dm
        }' "$1"
}
echo "# TLS throughput: partisan over TLS vs partisan over TCP vs disterl over TLS"
echo
echo "Median msg/s of the repetitions (credit-window throughput, bench/throughput.erl), partisan P=1."
echo "TLS: TLS 1.3, mutual (verify_peer, fail_if_no_peer_cert), ECDSA P-256 test certificates;"
echo "disterl over TLS: \`-proto_dist inet_tls -ssl_dist_optfile\` with the same CA."
echo "Full reports (environment, emulator flags, CPU, min–max): $(basename "$1"), $(basename "$2")."
echo
echo "| case | partisan TCP | partisan TLS | disterl TCP | disterl TLS | partisan TLS / disterl TLS | partisan TLS / partisan TCP |"
echo "|---|---:|---:|---:|---:|---:|---:|"
join -t'|' <(rows "$1" | sort) <(rows "$2" | sort) | sort -t'|' -k1,1V |
    awk -F'|' '{ printf "| %s | %\047d | %\047d | %\047d | %\047d | %.2f× | %.2f× |\n", $1, $2, $4, $3, $5, ($5 > 0 ? $4 / $5 : 0), ($2 > 0 ? $4 / $2 : 0) }'
