#!/usr/bin/env bash
# Message throughput between two BEAM nodes: partisan's Rust data plane vs Distributed Erlang.
# Kept for compatibility: the same as `bench/run.sh throughput` (see bench/README.md).
exec "$(cd "$(dirname "$0")" && pwd)/run.sh" throughput "$@"
