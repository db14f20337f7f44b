# Partisan on a Rust data plane. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
REBAR ?= rebar3
EBIN := _build/default/lib/partisan/ebin
# The CT and demo controller nodes are alive on loopback; peers never meet over disterl.
CT_NAME ?= ct@127.0.0.1

.PHONY: all deps build test rust-test eunit ct mix-test test-deps test-examples dialyzer demo bench clean \
	readme-check

all: build

deps:
	@sh scripts/ensure_deps.sh

build: deps
	$(REBAR) compile

rust-test: deps
	cargo test --locked -p partisan_core -p partisan_net -p partisan_sim -p partisan_peer

eunit: build
	$(REBAR) eunit

ct: build
	$(REBAR) ct --name $(CT_NAME)

dialyzer: build
	$(REBAR) dialyzer

mix-test: build
	MIX_ENV=test mix test

# This repository as a new user's dependency: a fresh clone of HEAD in a new Mix project (path
# dependency: compile, run, release) and a new rebar3 project (git dependency), each starting
# partisan in an unnamed VM (~30 s with a built target/; see scripts/check_dependency.sh).
test-deps: build
	bash scripts/check_dependency.sh

# The examples (examples/elixir_release, examples/erlang_release) as shipped: each release built
# (mix release, rebar3 release) and two instances of it, configured from the environment, that
# find each other and exchange messages (~15 s; scripts/check_examples.sh).
test-examples: build
	bash scripts/check_examples.sh

# The README's performance tables are those of the newest reports in bench/results/.
readme-check: deps
	escript bench/readme_tables.escript --check README.md bench/results

test: readme-check rust-test eunit ct mix-test test-deps test-examples dialyzer bench-smoke

demo: build
	@mkdir -p _build/demo
	erlc +debug_info -o _build/demo demo/partisan_demo.erl
	erl -noshell -name demo@127.0.0.1 -pa $(EBIN) -pa _build/demo -s partisan_demo main

# The simulator's figures (HyParView at 1,000 and 10,000 nodes, full mesh vs N) into sim/results/:
# markdown tables, .dat files and PNG plots (gnuplot-nox is installed when missing; without it
# the plots are skipped and the tables still written).
.PHONY: sim
sim:
	@command -v gnuplot >/dev/null 2>&1 || { echo "Installing Debian package: gnuplot-nox"; \
	    SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq gnuplot-nox >/dev/null \
	    || echo "could not install gnuplot: plots will be skipped"; }
	cargo run --locked --release -p partisan_sim -- --out sim/results

# Benchmarks vs Distributed Erlang (bench/README.md). `make bench` runs every scenario in turn
# (~11 min at the defaults; each scenario is bounded by its own watchdog and a shell timeout);
# reports and plots go to bench/results/, and the README's performance tables are rewritten from
# them (not when BENCH_RESULTS_DIR sends the reports elsewhere). BENCH_* variables enlarge the
# sweeps.
.PHONY: bench-scale bench-deps bench-throughput bench-latency bench-hol bench-echo bench-join bench-limits \
	bench-linkemu bench-smoke bench-call bench-tls bench-compression bench-readme
bench: bench-limits bench-linkemu bench-throughput bench-latency bench-hol bench-echo bench-join \
	bench-call bench-tls bench-compression
	@if [ -z "$$BENCH_RESULTS_DIR" ]; then $(MAKE) --no-print-directory bench-readme; \
	else echo "BENCH_RESULTS_DIR is set: README tables left as they are"; fi

# The README's performance tables from the newest report of each scenario in bench/results/.
bench-readme: deps
	escript bench/readme_tables.escript README.md bench/results

bench-deps: deps
	@command -v gnuplot >/dev/null 2>&1 && command -v iperf3 >/dev/null 2>&1 || { \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  echo "Installing Debian packages: gnuplot-nox iperf3"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq gnuplot-nox iperf3 >/dev/null \
	  || echo "could not install gnuplot-nox/iperf3: plots and iperf3 numbers will be skipped"; }

# Default emulator flags, then +sbwt none (BENCH_THR_FLAGS): one report each.
bench-throughput: build bench-deps
	bash bench/run.sh throughput

bench-latency: build bench-deps
	bash bench/run.sh latency

bench-hol: build bench-deps
	bash bench/run.sh hol

bench-echo: build bench-deps
	bash bench/run.sh echo

bench-join: build bench-deps
	bash bench/run.sh join

bench-limits: build bench-deps
	bash bench/run.sh limits

# Remote gen_server calls: partisan_gen_server:call vs gen_server:call over disterl, 1 and 64 callers.
bench-call: build bench-deps
	bash bench/run.sh call

# A live HyParView + Plumtree overlay of N members in one process, two for N = 1,000 (partisan_peer's
# scale example; a member holds ~27 descriptors) plus one BEAM node that originates every other broadcast: joins one after another (100, 300, 1,000) and all at once through one contact (300).
# Reports in bench/results/scale-*.md, plotted into bench/results/scale.png (with gnuplot). Not
# part of `make bench` (about 6 minutes).
SCALE = bash bench/scale.sh
bench-scale: build
	mkdir -p bench/results
	$(SCALE) --nodes 100 --out bench/results/scale-100.md
	$(SCALE) --nodes 300 --out bench/results/scale-300.md
	$(SCALE) --nodes 300 --join concurrent --deadline-seconds 60 --out bench/results/scale-300-all-at-once.md
	$(SCALE) --nodes 1000 --procs 2 --deadline-seconds 60 --out bench/results/scale-1000.md
	bash bench/scale_plot.sh

# TLS: partisan over rustls vs partisan over TCP vs disterl over TLS (-proto_dist inet_tls), small
# messages (bench/tls.sh; test certificates made for the run with openssl).
bench-tls: build bench-deps
	bash bench/tls.sh

# Compression: compressible 64 KiB payloads over the link emulator capped at 100 Mbit/s, with and
# without the channel's compression (bench/bench_compression.erl).
bench-compression: build bench-deps
	bash bench/run.sh compression

# The link emulator's own tests: the delay it adds is the one asked, within 10 %.
bench-linkemu: deps
	@mkdir -p bench/results
	set -o pipefail; cargo test --locked --release -p partisan_linkemu -- --nocapture 2>&1 \
	  | tee bench/results/linkemu-test-$$(date -u +%Y-%m-%d).txt

# A few hundred messages over both transports (< 15 s): keeps the harness from rotting.
# A unique controller name, so the smoke run never collides with a benchmark already running.
bench-smoke: build
	BENCH_NODE=bench_smoke_$$$$@127.0.0.1 BENCH_TIMEOUT=60 bash bench/run.sh smoke

clean:
	$(REBAR) clean
	cargo clean
	rm -rf _build priv/*.so
