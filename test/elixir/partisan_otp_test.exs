defmodule PartisanOtpTest do
  use ExUnit.Case

  @ebin Path.expand("_build/mix/test/lib/partisan/ebin")

  # An Elixir GenServer (Elixir's GenServer is OTP's gen_server) and a caller that turns exits
  # into values. Compiled here and loaded on the peers, which run Elixir too.
  @counter """
  defmodule Partisan.TestCounter do
    use GenServer
    def start(name), do: GenServer.start(__MODULE__, 0, name: name)
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
  """

  defp start_peer(name, modules) do
    elixir_ebin = :code.lib_dir(:elixir) |> Path.join("ebin") |> to_charlist()
    args = [~c"-connect_all", ~c"false", ~c"-pa", to_charlist(@ebin), ~c"-pa", elixir_ebin]
    {:ok, peer, node} = :peer.start_link(%{name: name, host: ~c"127.0.0.1", longnames: true, args: args})
    {:ok, _} = :erpc.call(node, :application, :ensure_all_started, [:elixir])
    for {mod, bin} <- modules, do: {:module, ^mod} = :erpc.call(node, :code, :load_binary, [mod, ~c"counter.ex", bin])
    {:ok, _} = :erpc.call(node, :application, :ensure_all_started, [:partisan])
    {peer, node}
  end

  test "an Elixir GenServer on one node is called from another over partisan" do
    modules = Code.compile_string(@counter)
    {pa, a} = start_peer(:ex_otp_a, modules)
    {pb, b} = start_peer(:ex_otp_b, modules)
    spec_b = :erpc.call(b, :partisan, :node_spec, [])
    assert :ok == :erpc.call(a, :partisan_peer_service, :sync_join, [spec_b])

    {:ok, _} = :erpc.call(b, Partisan.TestCounter, :start, [:counter])
    server = {:counter, b}
    assert 1 == :erpc.call(a, :partisan_gen_server, :call, [server, :incr])
    assert 2 == :erpc.call(a, :partisan_gen_server, :call, [server, :incr, [timeout: 1_000]])
    assert :ok == :erpc.call(a, :partisan_gen_server, :cast, [server, :reset])

    # A crash in the server reaches the caller as the exit gen_server:call would give. (The
    # crash report the server's node would print is expected: that node logs nothing meanwhile.)
    %{level: level} = :erpc.call(b, :logger, :get_primary_config, [])
    :ok = :erpc.call(b, :logger, :set_primary_config, [:level, :none])
    assert {:exit, {{%RuntimeError{message: "boom"}, _}, {:partisan_gen_server, :call, _}}} =
             :erpc.call(a, Partisan.TestCounter, :call, [server, :crash])
    :ok = :erpc.call(b, :logger, :set_primary_config, [:level, level])

    # The server is gone (nothing restarts it): noproc, as over Distributed Erlang.
    assert {:exit, {:noproc, {:partisan_gen_server, :call, _}}} =
             :erpc.call(a, Partisan.TestCounter, :call, [server, :incr])

    # The two nodes never connected over Distributed Erlang.
    assert :erpc.call(a, :erlang, :nodes, []) == [node()]

    :peer.stop(pa)
    :peer.stop(pb)
  end
end
