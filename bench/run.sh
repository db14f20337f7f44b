#!/usr/bin/env bash
# Runs one benchmark scenario: bench/run.sh throughput|latency|hol|echo|join|limits|call|smoke
#
# Compiles bench/*.erl into a temporary directory and runs the scenario's main/0 on a controller
# node (erl -name bench@127.0.0.1), which starts the peer nodes (and link emulators), runs every
# case over partisan and Distributed Erlang, prints a markdown report and writes it (with a PNG
# plot when gnuplot is installed) to bench/results/. Exits non-zero on any failure.
# See bench/README.md for the method of each scenario and the BENCH_* environment variables.
set -euo pipefail

SCENARIO="${1:?usage: bench/run.sh throughput|latency|hol|echo|join|limits|call|smoke|compression}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
EBIN="$ROOT/_build/default/lib/partisan/ebin"
NIF="$ROOT/priv/libpartisan_nif.so"

case "$SCENARIO" in
    throughput) MODULE=throughput; DEFAULT_TIMEOUT=900 ;;  # two flag sets (BENCH_THR_FLAGS)
    latency|hol|echo|join|limits|call|smoke|compression) MODULE="bench_$SCENARIO"; DEFAULT_TIMEOUT=300 ;;
    *) echo "unknown scenario: $SCENARIO" >&2; exit 64 ;;
esac

# Build partisan only when asked (BENCH_BUILD=1) or when it has never been built.
if [ "${BENCH_BUILD:-0}" = 1 ] || [ ! -f "$EBIN/partisan.beam" ] || [ ! -f "$NIF" ]; then
    (cd "$ROOT" && rebar3 compile)
fi
# The link emulator (used by echo and smoke) and the loopback limit probe (throughput's 1 MiB
# rows); cargo does nothing when they are up to date.
case "$SCENARIO" in
    echo|smoke|compression|throughput)
        (cd "$ROOT" && cargo build --release --locked -q -p partisan_linkemu)
        # Wherever cargo puts it (CARGO_TARGET_DIR, .cargo/config.toml), not always target/.
        TARGET_DIR="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps --locked \
            | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
        export BENCH_LINKEMU="$TARGET_DIR/release/partisan_linkemu"
        export BENCH_LOOPBACK_LIMIT="$TARGET_DIR/release/loopback_limit" ;;
esac

# Not named partisan-*: code:priv_dir(partisan) would take such a directory for the app.
BEAM_DIR="$(mktemp -d "${TMPDIR:-/tmp}/bench_beams.XXXXXX")"
trap 'rm -rf "$BEAM_DIR"' EXIT
erlc -pa "$EBIN" -o "$BEAM_DIR" "$HERE"/*.erl

# What was measured: the commit, uncommitted changes, and the NIF library (read-only git calls).
if [ -z "${BENCH_BUILD_INFO:-}" ]; then
    COMMIT="$(git -C "$ROOT" --no-optional-locks rev-parse --short HEAD 2>/dev/null || echo unknown)"
    DIRTY="$( (git -C "$ROOT" --no-optional-locks status --porcelain --untracked-files=no 2>/dev/null || true) | wc -l)"
    NIF_SUM="$(sha256sum "$NIF" | cut -c1-12)"
    NIF_TIME="$(date -u -r "$NIF" +%Y-%m-%dT%H:%M:%SZ)"
    export BENCH_BUILD_INFO="commit $COMMIT ($DIRTY tracked file(s) modified); priv/libpartisan_nif.so sha256 $NIF_SUM, built $NIF_TIME"
fi

export BENCH_RESULTS_DIR="${BENCH_RESULTS_DIR:-$HERE/results}"
mkdir -p "$BENCH_RESULTS_DIR"

# The Erlang side has its own watchdog; this is the last resort. Peers halt when the controller's
# connection to them goes away; proxies exit when their stdin (a port of the controller) closes.
timeout --kill-after=10 "${BENCH_TIMEOUT:-$DEFAULT_TIMEOUT}" \
    erl -noshell -name "${BENCH_NODE:-bench@127.0.0.1}" -connect_all false \
        -pa "$BEAM_DIR" -pa "$EBIN" ${BENCH_CONTROLLER_ARGS:-} \
        -eval "$MODULE:main()"
