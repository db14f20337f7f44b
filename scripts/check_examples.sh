#!/usr/bin/env bash
# Builds the release of each example under examples/ and checks that two instances of it, both
# configured from environment variables, find each other over Partisan and exchange messages:
#
#   examples/elixir_release  MIX_ENV=prod mix release  (config/runtime.exs)
#   examples/erlang_release  rebar3 release            (config/sys.config.src, vm.args.src)
#
# Each instance greets the other with a partisan_gen_server call as soon as it sees it up (peer
# discovery with the list backend: no join call); the check waits for both greetings and both
# answers in the instances' output, then stops them with SIGTERM (the release's graceful stop)
# and expects them to exit with 0. Every wait is bounded. `make test-examples' runs it (part of
# `make test'); it exits non-zero on the first failure.
#
# The examples build in place, from this working tree: the Mix example depends on the
# repository by path (../..), the rebar3 one through _checkouts/partisan (a link to the
# repository root). So cargo builds in this checkout's own target directory (CARGO_TARGET_DIR
# if set), which `make build' has already brought up to date: no Rust is compiled again.
# The instances run with -dist_listen false (no Distributed Erlang port, nothing in epmd), on
# loopback ports the OS hands out.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
T0=$(date +%s)
WORK="$(mktemp -d "${TMPDIR:-/tmp}/examples.XXXXXX")"
# The instances this script started and has not seen exit (killed if it fails half-way).
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
forget() {
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]+"${keep[@]}"}")
}
trap cleanup EXIT

step() { echo "== examples ($(( $(date +%s) - T0 )) s): $*"; }
fail() {
    echo "examples FAILED: $*" >&2
    for log in "$WORK"/*.log; do
        [ -f "$log" ] && { echo "--- $log" >&2; tail -n 40 "$log" >&2; }
    done
    exit 1
}

# Four loopback ports free now (the OS picks them).
read -r PORT_A PORT_B PORT_C PORT_D < <(erl -noshell -eval '
    Ss = [element(2, gen_tcp:listen(0, [{ip, {127,0,0,1}}])) || _ <- [1,2,3,4]],
    io:format("~s~n", [lists:join(" ", [integer_to_list(element(2, inet:port(S))) || S <- Ss])]),
    halt().')

# wait_for LOG PATTERN...: until every pattern is in LOG (60 s at most).
wait_for() {
    local log=$1; shift
    local deadline=$(( $(date +%s) + 60 ))
    while :; do
        local missing=0
        for p in "$@"; do grep -qF -- "$p" "$log" || missing=1; done
        [ $missing = 0 ] && return 0
        [ "$(date +%s)" -ge $deadline ] && fail "$log lacks one of: $*"
        sleep 0.2
    done
}

# stop PID NAME: SIGTERM, then wait (30 s at most) for exit status 0.
stop() {
    local pid=$1 name=$2 status=0
    kill -TERM "$pid"
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && fail "$name did not stop within 30 s of SIGTERM"
    wait "$pid" || status=$?
    forget "$pid"
    [ "$status" = 0 ] || fail "$name exited with status $status"
}

no_warnings() {
    if grep -qi "warning" "$1"; then grep -i "warning" "$1" >&2; fail "$2 printed warnings"; fi
}

# -- Elixir: mix release ------------------------------------------------------
EX="$ROOT/examples/elixir_release"
step "elixir_release: MIX_ENV=prod mix release"
(cd "$EX" && MIX_ENV=prod timeout 120 mix deps.get && MIX_ENV=prod timeout 900 mix release --overwrite) \
    > "$WORK/mix_release.log" 2>&1 || fail "mix release failed"
no_warnings "$WORK/mix_release.log" "mix release"
BIN="$EX/_build/prod/rel/elixir_release/bin/elixir_release"

step "elixir_release: two instances (ex_a, ex_b)"
RELEASE_DISTRIBUTION=name RELEASE_NODE=ex_a@127.0.0.1 PARTISAN_PORT=$PORT_A \
    PARTISAN_PEERS="ex_b@127.0.0.1:$PORT_B" "$BIN" start > "$WORK/ex_a.log" 2>&1 &
EX_A=$!; PIDS+=("$EX_A")
RELEASE_DISTRIBUTION=name RELEASE_NODE=ex_b@127.0.0.1 PARTISAN_PORT=$PORT_B \
    PARTISAN_PEERS="ex_a@127.0.0.1:$PORT_A" "$BIN" start > "$WORK/ex_b.log" 2>&1 &
EX_B=$!; PIDS+=("$EX_B")
wait_for "$WORK/ex_a.log" "ex_b@127.0.0.1 answered {:welcome, :\"ex_b@127.0.0.1\"}" \
    "ex_b@127.0.0.1 greeted ex_a@127.0.0.1"
wait_for "$WORK/ex_b.log" "ex_a@127.0.0.1 answered {:welcome, :\"ex_a@127.0.0.1\"}" \
    "ex_a@127.0.0.1 greeted ex_b@127.0.0.1"
stop "$EX_B" ex_b
stop "$EX_A" ex_a

# -- Erlang: rebar3 release -----------------------------------------------------
ER="$ROOT/examples/erlang_release"
step "erlang_release: rebar3 release"
(cd "$ER" && timeout 900 rebar3 release) > "$WORK/rebar3_release.log" 2>&1 || fail "rebar3 release failed"
no_warnings "$WORK/rebar3_release.log" "rebar3 release"
BIN="$ER/_build/default/rel/erlang_release/bin/erlang_release"

step "erlang_release: two instances (er_a, er_b)"
# Both run from one release directory: each writes its expanded sys.config and vm.args into a
# directory of its own.
mkdir -p "$WORK/er_a" "$WORK/er_b"
RELX_OUT_FILE_PATH="$WORK/er_a" NODE_NAME=er_a@127.0.0.1 COOKIE=erlang_release_example \
    PARTISAN_PORT=$PORT_C PARTISAN_PEER="er_b@127.0.0.1:$PORT_D" "$BIN" foreground > "$WORK/er_a.log" 2>&1 &
ER_A=$!; PIDS+=("$ER_A")
RELX_OUT_FILE_PATH="$WORK/er_b" NODE_NAME=er_b@127.0.0.1 COOKIE=erlang_release_example \
    PARTISAN_PORT=$PORT_D PARTISAN_PEER="er_a@127.0.0.1:$PORT_C" "$BIN" foreground > "$WORK/er_b.log" 2>&1 &
ER_B=$!; PIDS+=("$ER_B")
wait_for "$WORK/er_a.log" "'er_b@127.0.0.1' answered {welcome,'er_b@127.0.0.1'}" \
    "'er_b@127.0.0.1' greeted 'er_a@127.0.0.1'"
wait_for "$WORK/er_b.log" "'er_a@127.0.0.1' answered {welcome,'er_a@127.0.0.1'}" \
    "'er_a@127.0.0.1' greeted 'er_b@127.0.0.1'"
stop "$ER_B" er_b
stop "$ER_A" er_a

step "all good"
