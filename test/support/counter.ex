defmodule Partisan.TestCounter do
  @moduledoc "An Elixir GenServer for the OTP-layer ExUnit test: Elixir's GenServer is OTP's gen_server."
  use GenServer

  def start(name), do: GenServer.start(__MODULE__, 0, name: name)

  @doc "Calls `server` with `:partisan_gen_server.call/2` (run on a peer): `{:ok, reply}` or `{:exit, reason}`."
  def call(server, request) do
    {:ok, :partisan_gen_server.call(server, request)}
  catch
    :exit, reason -> {:exit, reason}
  end

  @impl true
  def init(n), do: {:ok, n}

  @impl true
  def handle_call(:incr, _from, n), do: {:reply, n + 1, n + 1}
  def handle_call(:crash, _from, _n), do: raise("boom")

  @impl true
  def handle_cast(:reset, _n), do: {:noreply, 0}
end
