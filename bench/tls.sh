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
# Default emulator flags only (disterl over TLS is compared as users run it).
export BENCH_THR_FLAGS="${BENCH_THR_FLAGS-}"
RESULTS="${BENCH_RESULTS_DIR:-$HERE/results}"
mkdir -p "$WORK/plain" "$WORK/tls" "$RESULTS"

echo "== plain: partisan over TCP, disterl over TCP"
BENCH_RESULTS_DIR="$WORK/plain" bash "$HERE/run.sh" throughput
echo "== TLS: partisan over rustls, disterl over inet_tls"
TLS_ARGS="-proto_dist inet_tls -ssl_dist_optfile $WORK/ssl_dist.conf"
BENCH_RESULTS_DIR="$WORK/tls" BENCH_PARTISAN_TLS="$C" BENCH_PEER_ARGS="${BENCH_PEER_ARGS:-} $TLS_ARGS" \
    BENCH_CONTROLLER_ARGS="$TLS_ARGS" BENCH_NODE="bench_tls@127.0.0.1" bash "$HERE/run.sh" throughput

STAMP="$(date -u +%Y-%m-%d-%H%M%S)"
PLAIN_MD="$RESULTS/tls-$STAMP-plain-run.md"
TLS_MD="$RESULTS/tls-$STAMP-tls-run.md"
cp "$(ls "$WORK"/plain/*.md | head -1)" "$PLAIN_MD"
cp "$(ls "$WORK"/tls/*.md | head -1)" "$TLS_MD"
bash "$HERE/tls_table.sh" "$PLAIN_MD" "$TLS_MD" > "$RESULTS/tls-$STAMP.md"
cat "$RESULTS/tls-$STAMP.md"
