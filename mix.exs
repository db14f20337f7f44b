# The same `partisan` application for Elixir projects: the Erlang sources of erl_src/ and the
# Rust NIF, built by cargo through the `partisan_nif` compiler step below. No hex package.
defmodule Mix.Tasks.Compile.PartisanNif do
  @moduledoc "Builds the Rust NIF with cargo and installs it as priv/libpartisan_nif.so."
  use Mix.Task.Compiler

  @impl true
  def run(_args) do
    case System.cmd("sh", ["native/build_nif.sh"], stderr_to_stdout: true) do
      {_, 0} ->
        {:ok, []}

      {out, status} ->
        Mix.shell().error(out)
        Mix.raise("cargo build of the partisan NIF failed (exit #{status})")
    end
  end
end

defmodule Partisan.MixProject do
  use Mix.Project

  def project do
    [
      app: :partisan,
      # Separate from rebar3's _build/default and _build/test.
      build_path: "_build/mix",
      version: "0.1.0",
      elixir: "~> 1.14",
      language: :erlang,
      erlc_paths: ["erl_src"],
      erlc_options: [:debug_info],
      elixirc_paths: elixirc_paths(Mix.env()),
      compilers: [:partisan_nif | Mix.compilers()],
      test_paths: ["test/elixir"],
      deps: [],
      # The test VM is a controller: partisan runs on the peers it starts, not on it.
      aliases: [test: "test --no-start"]
    ]
  end

  def application do
    [mod: {:partisan_app, []}, applications: [:kernel, :stdlib]]
  end

  defp elixirc_paths(:test), do: ["test/support"]
  defp elixirc_paths(_), do: []
end
