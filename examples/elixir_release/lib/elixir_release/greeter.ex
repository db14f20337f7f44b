defmodule ElixirRelease.Greeter do
  @moduledoc """
  Greets every node that comes up, over Partisan: a `GenServer` call to the greeter of the other
  node through `:partisan_gen_server` (the request and its reply travel on the `data` channel),
  printed with the answer.
  """
  use GenServer
  require Logger

  def start_link(_), do: GenServer.start_link(__MODULE__, [], name: __MODULE__)

  @impl true
  def init([]) do
    :ok = :partisan.monitor_nodes(true)
    # Peer discovery may have joined a node before this subscription: `:nodeup` comes only for
    # later ones (as with `:net_kernel.monitor_nodes/1`), so the nodes up now are greeted too.
    {:ok, Enum.reduce(:partisan.nodes(), MapSet.new(), &greet_once/2)}
  end

  @impl true
  def handle_info({:nodeup, node}, greeted), do: {:noreply, greet_once(node, greeted)}

  def handle_info({:nodedown, node}, greeted) do
    Logger.info("#{node} is down")
    {:noreply, MapSet.delete(greeted, node)}
  end

  @impl true
  def handle_call({:hello, from_node}, _from, state) do
    IO.puts("elixir_release: #{from_node} greeted #{:partisan.node()}")
    {:reply, {:welcome, :partisan.node()}, state}
  end

  # Greets `node` unless it was greeted since it last came up (a node up at subscription time may
  # also send `:nodeup`). Not from this process: two greeters calling each other at once would
  # wait on each other.
  defp greet_once(node, greeted) do
    if MapSet.member?(greeted, node) do
      greeted
    else
      Task.start(fn -> greet(node, 10) end)
      MapSet.put(greeted, node)
    end
  end

  # `{:nodeup, node}` comes with this node's first connection to `node`: the call goes once every
  # channel is up. Its answer travels on `node`'s own connections to this one, which may still be
  # opening, and `node`'s greeter may not be registered yet: such a call is tried again, a few
  # times.
  defp greet(node, 0), do: Logger.warning("#{node} did not answer")

  defp greet(node, tries) do
    wait_connected(node, 50)
    reply = :partisan_gen_server.call({__MODULE__, node}, {:hello, :partisan.node()}, timeout: 1_000, channel: :data)
    IO.puts("elixir_release: #{node} answered #{inspect(reply)}")
  catch
    # The other node's partisan is up before its application has registered its greeter.
    :exit, {:noproc, _} ->
      Process.sleep(200)
      greet(node, tries - 1)

    :exit, {reason, _} when reason == :timeout or (is_tuple(reason) and elem(reason, 0) == :nodedown) ->
      greet(node, tries - 1)
  end

  defp wait_connected(_node, 0), do: false

  defp wait_connected(node, tries) do
    :partisan.is_fully_connected(node) || (Process.sleep(100) && wait_connected(node, tries - 1))
  end
end
