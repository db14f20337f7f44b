#!/usr/bin/env bash
# Uses this repository as a new user would: as a dependency of a fresh Mix project (path:
# dependency, then `mix release`) and of a fresh rebar3 project (git dependency), each on a
# fresh `git clone` of HEAD (no priv/, no target/, no _build/ from here). Each project starts
# the `partisan` application in an unnamed VM and checks that the NIF is loaded and the node
# listens. `make test-deps` runs it; it exits non-zero on the first failure.
#
# Only committed work is checked (the clone is of HEAD). The VMs it starts are not
# distributed, so no node name can collide with another run.
#
# cargo: the clones build into their own target directory (target/depcheck by default,
# PARTISAN_DEPCHECK_TARGET to change it), seeded from this checkout's target/release the first
# time so that only the three crates of this workspace are compiled. It is never this
# checkout's own target directory: cargo identifies a workspace's crates by their path relative
# to the workspace root, so a clone building there would leave its library where this
# checkout's next build takes it for up to date.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SHA="$(git -C "$ROOT" rev-parse HEAD)"
ROOT_TARGET="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps --locked \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
export CARGO_TARGET_DIR="${PARTISAN_DEPCHECK_TARGET:-$ROOT_TARGET/depcheck}"
# Not named partisan*: code:priv_dir(partisan) could take such a directory for the app.
WORK="$(mktemp -d "${TMPDIR:-/tmp}/depcheck.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
T0=$(date +%s)

step() { echo "== depcheck ($(( $(date +%s) - T0 )) s): $*"; }
fail() { echo "depcheck FAILED: $*" >&2; exit 1; }

if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]; then
    echo "depcheck: uncommitted changes in $ROOT are not part of this check (it clones HEAD)"
fi

if [ ! -d "$CARGO_TARGET_DIR/release" ] && [ -d "$ROOT_TARGET/release" ]; then
    step "seeding $CARGO_TARGET_DIR from $ROOT_TARGET/release (crates.io dependencies only)"
    mkdir -p "$CARGO_TARGET_DIR"
    cp -a "$ROOT_TARGET/release" "$CARGO_TARGET_DIR/release"
    rm -rf "$CARGO_TARGET_DIR"/release/.fingerprint/partisan_* \
           "$CARGO_TARGET_DIR"/release/deps/*partisan_* \
           "$CARGO_TARGET_DIR"/release/libpartisan_* "$CARGO_TARGET_DIR"/release/partisan_*
fi

# What each VM checks once `partisan` is started: the NIF answers, and the node listens on a
# real port under its partisan name while the VM itself is not distributed.
ERL_CHECK='{ok, _} = application:ensure_all_started(partisan),
       #{name := Name, listen_addrs := [#{port := Port} | _]} = partisan:node_spec(),
       true = is_integer(Port) andalso Port > 0,
       Name = partisan:node(),
       nonode@nohost = node(),
       #{} = partisan_nif:stats(),
       io:format("depcheck: partisan up as ~p on port ~p~n", [Name, Port])'
EX_CHECK='{:ok, _} = Application.ensure_all_started(:partisan)
%{name: name, listen_addrs: [%{port: port} | _]} = :partisan.node_spec()
true = is_integer(port) and port > 0
^name = :partisan.node()
:nonode@nohost = node()
%{} = :partisan_nif.stats()
IO.puts("depcheck: partisan up as #{name} on port #{port}")'

step "git clone of $SHA"
git clone -q "$ROOT" "$WORK/partisan"
git -C "$WORK/partisan" checkout -q "$SHA"

# -- Mix -----------------------------------------------------------------------
step "mix new + {:partisan, path: ...}"
(cd "$WORK" && mix new depcheck_mix >/dev/null)
cd "$WORK/depcheck_mix"
sed -i 's|# {:dep_from_hexpm, "~> 0.3.0"},|{:partisan, path: "../partisan"},|' mix.exs
grep -q '{:partisan, path: "../partisan"}' mix.exs || fail "could not add the dependency to mix.exs"
timeout 120 mix deps.get
step "mix compile (first compile of a fresh clone)"
timeout 900 mix compile 2>&1 | tee "$WORK/mix_compile.log"
if grep -q "warning:" "$WORK/mix_compile.log"; then fail "mix compile printed warnings"; fi
[ -f _build/dev/lib/partisan/priv/libpartisan_nif.so ] \
    || fail "_build/dev/lib/partisan/priv/libpartisan_nif.so missing after the first mix compile"
step "mix run (unnamed VM)"
timeout 120 mix run -e "$EX_CHECK"
step "mix release + bin/depcheck_mix eval"
MIX_ENV=prod timeout 900 mix release --overwrite --quiet
timeout 120 _build/prod/rel/depcheck_mix/bin/depcheck_mix eval "$EX_CHECK"

# -- rebar3 --------------------------------------------------------------------
# rebar3 3.19 has no path dependencies (they need a plugin): a git dependency on the clone,
# which is what a user's rebar.config holds.
step "rebar3 new app + {partisan, {git, ...}}"
(cd "$WORK" && rebar3 new app depcheck_rebar >/dev/null)
cd "$WORK/depcheck_rebar"
cat > rebar.config <<EOF
{erl_opts, [debug_info]}.
{deps, [{partisan, {git, "file://$WORK/partisan", {ref, "$SHA"}}}]}.
EOF
step "rebar3 compile"
timeout 900 rebar3 compile
step "erl (unnamed VM) with the rebar3 build"
timeout 120 erl -noshell -pa _build/default/lib/*/ebin \
    -eval "try $ERL_CHECK, halt(0) catch C:R:S -> io:format(\"~p~n\", [{C, R, S}]), halt(1) end." \
    || fail "partisan did not start from the rebar3 build"

step "all good"
