#!/bin/sh
# Installs what the build needs when it is missing (fresh machines): Erlang/OTP, rebar3, Elixir
# from Debian packages. Rust (cargo) must already be on the machine.
set -e
missing=""
command -v erl >/dev/null 2>&1 || missing="$missing erlang-nox erlang-dev"
command -v ct_run >/dev/null 2>&1 || missing="$missing erlang-common-test"
erl -noshell -eval 'case code:lib_dir(eunit) of {error,_} -> halt(1); _ -> halt(0) end.' >/dev/null 2>&1 \
    || missing="$missing erlang-eunit"
command -v dialyzer >/dev/null 2>&1 || missing="$missing erlang-dialyzer"
command -v rebar3 >/dev/null 2>&1 || missing="$missing rebar3"
command -v elixir >/dev/null 2>&1 || missing="$missing elixir"
# The TLS tests make their certificates with the openssl CLI; the compression test reads ss.
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
command -v ss >/dev/null 2>&1 || missing="$missing iproute2"
if [ -n "$missing" ]; then
    echo "Installing Debian packages:$missing"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
exit 0
