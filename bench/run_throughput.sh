#!/usr/bin/env bash
# Message throughput between two BEAM nodes: partisan's Rust data plane vs Distributed Erlang.
#
# Compiles bench/throughput.erl into a temporary directory and runs it on a controller node
# (erl -name bench@127.0.0.1), which starts two peer nodes, runs every case and prints a markdown
# report (also written to bench/results/throughput-<date>.md). Exits non-zero on any failure.
# See bench/README.md for the method and the BENCH_* environment variables.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
EBIN="$ROOT/_build/default/lib/partisan/ebin"
NIF="$ROOT/priv/libpartisan_nif.so"

# Build partisan only when asked (BENCH_BUILD=1) or when it has never been built.
if [ "${BENCH_BUILD:-0}" = 1 ] || [ ! -f "$EBIN/partisan.beam" ] || [ ! -f "$NIF" ]; then
    (cd "$ROOT" && rebar3 compile)
fi

# Not named partisan-*: code:priv_dir(partisan) would take such a directory for the app.
BEAM_DIR="$(mktemp -d "${TMPDIR:-/tmp}/throughput_bench.XXXXXX")"
trap 'rm -rf "$BEAM_DIR"' EXIT
erlc -o "$BEAM_DIR" "$HERE/throughput.erl"

# What was measured: the commit, uncommitted changes, and the NIF library (read-only git calls).
COMMIT="$(git -C "$ROOT" --no-optional-locks rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY="$(git -C "$ROOT" --no-optional-locks status --porcelain --untracked-files=no 2>/dev/null | wc -l)"
NIF_SUM="$(sha256sum "$NIF" | cut -c1-12)"
NIF_TIME="$(date -u -r "$NIF" +%Y-%m-%dT%H:%M:%SZ)"
export BENCH_BUILD_INFO="commit $COMMIT ($DIRTY tracked file(s) modified); priv/libpartisan_nif.so sha256 $NIF_SUM, built $NIF_TIME"

export BENCH_RESULTS_DIR="${BENCH_RESULTS_DIR:-$HERE/results}"
mkdir -p "$BENCH_RESULTS_DIR"

# The Erlang side has its own watchdog; this is the last resort. Peers halt when the controller's
# connection to them goes away.
timeout --kill-after=10 "${BENCH_TIMEOUT:-300}" \
    erl -noshell -name "${BENCH_NODE:-bench@127.0.0.1}" -connect_all false \
        -pa "$BEAM_DIR" -pa "$EBIN" \
        -eval 'throughput:main()'
