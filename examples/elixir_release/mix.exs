defmodule ElixirRelease.MixProject do
  use Mix.Project

  # An Elixir application on Partisan, shipped with `mix release`. Outside this repository,
  # depend on partisan by git instead of by path:
  #   {:partisan, git: "https://example.com/your/partisan-rust.git", branch: "main"}
  def project do
    [
      app: :elixir_release,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      deps: [{:partisan, path: "../.."}],
      releases: [elixir_release: [include_executables_for: [:unix]]]
    ]
  end

  def application do
    [mod: {ElixirRelease.Application, []}, extra_applications: [:logger]]
  end
end
