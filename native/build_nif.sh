#!/bin/sh
# Builds the Rust NIF and installs it as priv/libpartisan_nif.so (rebar3 pre_hook, mix step).
set -e
cd "$(dirname "$0")/.."
cargo build --release --locked -p partisan_nif
mkdir -p priv
# Copy to a temporary name and rename, so a VM that has the old library loaded keeps it intact.
cp target/release/libpartisan_nif.so priv/libpartisan_nif.so.tmp
mv priv/libpartisan_nif.so.tmp priv/libpartisan_nif.so
