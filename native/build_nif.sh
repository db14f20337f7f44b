#!/bin/sh
# Builds the Rust NIF and installs it as priv/libpartisan_nif.so (rebar3 pre_hook, Mix step).
#
# cargo's progress goes to stderr as it happens (a cold build takes 1-3 minutes). The library
# copied is the one cargo reports for this very build (--message-format=json), wherever the
# target directory is (CARGO_TARGET_DIR, .cargo/config.toml): never a stale file that happens
# to lie in target/.
#
# PARTISAN_NIF_PROFILE=profiling builds with debug info (for perf/gdb); the default, release,
# ships without it.
set -e
cd "$(dirname "$0")/.."
PROFILE="${PARTISAN_NIF_PROFILE:-release}"

command -v cargo >/dev/null 2>&1 || {
    echo "partisan: cargo not found; the NIF needs Rust 1.91 or later (https://rustup.rs)" >&2
    exit 1
}

messages="$(mktemp "${TMPDIR:-/tmp}/partisan_cargo.XXXXXX")"
status="$(mktemp "${TMPDIR:-/tmp}/partisan_cargo.XXXXXX")"
trap 'rm -f "$messages" "$status"' EXIT

# JSON messages (stdout) to a file; cargo's progress and diagnostics (stderr) to the user as they
# come, silent when there is nothing to build (an up-to-date dependency says nothing).
{ cargo build --profile "$PROFILE" --locked -p partisan_nif \
      --message-format=json-render-diagnostics 2>&1 1>&3 3>&-
  echo $? >"$status"; } 3>"$messages" \
  | awk '/^ *Compiling / && !built { built = 1
                                     print "partisan: building the Rust NIF with cargo (1-3 minutes from scratch)" }
         /^ *Finished / && !built { next }
         { print; fflush() }' >&2
[ "$(cat "$status")" = 0 ] || { echo "partisan: cargo build of the NIF failed" >&2; exit 1; }

# The compiler-artifact message of the partisan_nif library lists the file it produced.
artifact="$(grep '"reason":"compiler-artifact"' "$messages" \
    | grep '"name":"partisan_nif"' \
    | sed -n 's/.*"filenames":\["\([^"]*\)".*/\1/p' | tail -n 1)"
if [ -z "$artifact" ] || [ ! -f "$artifact" ]; then
    echo "partisan: cargo did not report the partisan_nif library (got '$artifact')" >&2
    exit 1
fi

mkdir -p priv
if ! cmp -s "$artifact" priv/libpartisan_nif.so; then
    # Copy to a temporary name and rename, so a VM that has the old library loaded keeps it.
    cp "$artifact" priv/libpartisan_nif.so.tmp
    mv priv/libpartisan_nif.so.tmp priv/libpartisan_nif.so
    echo "partisan: installed priv/libpartisan_nif.so from $artifact" >&2
fi
