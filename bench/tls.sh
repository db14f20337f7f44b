#!/usr/bin/env bash
# TLS throughput: partisan over TLS (rustls in the data plane) vs partisan over plain TCP vs
# Distributed Erlang over TLS (-proto_dist inet_tls), small messages. `make bench-tls`.
#
# Two throughput runs (bench/throughput.erl) in one invocation, with the same cases:
#   1. plain: partisan over TCP, disterl over TCP;
#   2. TLS:   controller and peers started with -proto_dist inet_tls -ssl_dist_optfile (mutual
#             TLS 1.3, verify_peer, the same test certificates) and partisan with tls => true.
# Test certificates are made for the run (ct_suites/partisan_tls_SUITE_data/gen_test_certs.sh).
# The merged table goes to bench/results/tls-<date>-<time>.md (the two full reports beside it).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench_tls.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
sh "$ROOT/ct_suites/partisan_tls_SUITE_data/gen_test_certs.sh" "$WORK/certs"
C="$WORK/certs"
cat > "$WORK/ssl_dist.conf" <<CONF
[{server, [{certfile, "$C/dist.pem"}, {keyfile, "$C/dist.key"}, {cacertfile, "$C/ca.pem"},
           {verify, verify_peer}, {fail_if_no_peer_cert, true}, {versions, ['tlsv1.3']}]},
 {client, [{certfile, "$C/dist.pem"}, {keyfile, "$C/dist.key"}, {cacertfile, "$C/ca.pem"},
           {verify, verify_peer}, {versions, ['tlsv1.3']}]}].
CONF
export BENCH_PAYLOADS="${BENCH_PAYLOADS:-10,1024}"
export BENCH_SENDERS="${BENCH_SENDERS:-1,8,64}"
export BENCH_PARALLELISM="${BENCH_PARALLELISM:-1}"
export BENCH_REPS="${BENCH_REPS:-3}"
RESULTS="${BENCH_RESULTS_DIR:-$HERE/results}"
mkdir -p "$WORK/plain" "$WORK/tls" "$RESULTS"

echo "== plain: partisan over TCP, disterl over TCP"
BENCH_RESULTS_DIR="$WORK/plain" bash "$HERE/run.sh" throughput
echo "== TLS: partisan over rustls, disterl over inet_tls"
TLS_ARGS="-proto_dist inet_tls -ssl_dist_optfile $WORK/ssl_dist.conf"
BENCH_RESULTS_DIR="$WORK/tls" BENCH_PARTISAN_TLS="$C" BENCH_PEER_ARGS="${BENCH_PEER_ARGS:-} $TLS_ARGS" \
    BENCH_CONTROLLER_ARGS="$TLS_ARGS" BENCH_NODE="bench_tls@127.0.0.1" bash "$HERE/run.sh" throughput

STAMP="$(date -u +%Y-%m-%d-%H%M%S)"
PLAIN_DAT="$(ls "$WORK"/plain/*.dat | head -1)"
TLS_DAT="$(ls "$WORK"/tls/*.dat | head -1)"
cp "$(ls "$WORK"/plain/*.md | head -1)" "$RESULTS/tls-$STAMP-plain-run.md"
cp "$(ls "$WORK"/tls/*.md | head -1)" "$RESULTS/tls-$STAMP-tls-run.md"
OUT="$RESULTS/tls-$STAMP.md"
{
    echo "# TLS throughput ($STAMP)"
    echo
    echo "Median k msg/s over $BENCH_REPS reps (credit-window throughput, bench/throughput.erl), partisan P=$BENCH_PARALLELISM."
    echo "TLS: TLS 1.3, mutual (verify_peer, fail_if_no_peer_cert), ECDSA P-256 test certificates;"
    echo "disterl over TLS: \`-proto_dist inet_tls -ssl_dist_optfile\` with the same certificates."
    echo "Full reports (environment, emulator flags, CPU): tls-$STAMP-plain-run.md, tls-$STAMP-tls-run.md."
    echo
    echo "| case | partisan TCP | partisan TLS | disterl TCP | disterl TLS | partisan TLS / disterl TLS | partisan TLS / partisan TCP |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    # .dat rows: "case" partisan disterl (k msg/s)
    join -t'|' <(sed -n 's/^"\([^"]*\)" \([0-9.]*\) \([0-9.]*\)$/\1|\2|\3/p' "$PLAIN_DAT" | sort) \
               <(sed -n 's/^"\([^"]*\)" \([0-9.]*\) \([0-9.]*\)$/\1|\2|\3/p' "$TLS_DAT" | sort) |
    awk -F'|' '{ printf "| %s | %.1f | %.1f | %.1f | %.1f | %.2f× | %.2f× |\n", $1, $2, $4, $3, $5, ($5 > 0 ? $4 / $5 : 0), ($2 > 0 ? $4 / $2 : 0) }' |
    sort -t'|' -k2,2V
} > "$OUT"
cat "$OUT"
