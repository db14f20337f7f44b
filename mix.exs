# The same `partisan` application for Elixir projects: the Erlang sources of erl_src/ and the
# Rust NIF, built by cargo through the `partisan_nif` compiler step below. No hex package.
defmodule Mix.Tasks.Compile.PartisanNif do
  @moduledoc """
  Builds the Rust NIF with cargo (`native/build_nif.sh`) and makes sure the application's
  build directory has it in `priv/`.

  cargo's progress is shown as it happens (a cold build takes 1-3 minutes).
  """
  use Mix.Task.Compiler

  @impl true
  def run(_args) do
    root = Path.dirname(Mix.Project.project_file())
    script = Path.join([root, "native", "build_nif.sh"])

    case System.cmd("sh", [script], cd: root, stderr_to_stdout: true, into: IO.stream(:stdio, :line)) do
      {_, 0} ->
        install_priv(Path.join(root, "priv"), Path.join(Mix.Project.app_path(), "priv"))
        {:ok, []}

      {_, status} ->
        Mix.raise("partisan: cargo build of the NIF failed (exit #{status}); see the output above")
    end
  end

  # Mix links (or copies) priv/ into the build directory before any compiler runs, so on a
  # fresh checkout, where priv/ appears only now, the build directory has none: link it now.
  # Where Mix copied priv/ instead of linking it, refresh the copy.
  defp install_priv(source, target) do
    case File.read_link(target) do
      {:ok, _} ->
        :ok

      {:error, _} ->
        if File.dir?(target) do
          File.cp!(Path.join(source, "libpartisan_nif.so"), Path.join(target, "libpartisan_nif.so"))
        else
          File.mkdir_p!(Path.dirname(target))

          case Mix.Utils.symlink_or_copy(source, target) do
            {:error, reason} -> Mix.raise("partisan: cannot install #{source} as #{target}: #{inspect(reason)}")
            _ -> :ok
          end
        end
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
      compilers: [:partisan_nif | Mix.compilers()],
      test_paths: ["test/elixir"],
      deps: [],
      # The test VM is a controller: partisan runs on the peers it starts, not on it.
      aliases: [test: "test --no-start"]
    ]
  end

  def application do
    # telemetry is optional: started first when the host project has it (partisan_telemetry).
    [mod: {:partisan_app, []}, applications: [:kernel, :stdlib, {:telemetry, :optional}]]
  end
end
