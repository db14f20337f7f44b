defmodule ElixirRelease.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    Supervisor.start_link([ElixirRelease.Greeter], strategy: :one_for_one, name: ElixirRelease.Supervisor)
  end
end
