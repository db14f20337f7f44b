defmodule PartisanTest do
  use ExUnit.Case

  @ebin Path.expand("_build/mix/test/lib/partisan/ebin")

  defp start_peer(name) do
    args = [~c"-connect_all", ~c"false", ~c"-pa", to_charlist(@ebin)]
    {:ok, peer, node} = :peer.start_link(%{name: name, host: ~c"127.0.0.1", longnames: true, args: args})
    :ok = :erpc.call(node, :application, :set_env, [:partisan, :channels, %{data: %{parallelism: 2}}])
    {:ok, _} = :erpc.call(node, :application, :ensure_all_started, [:partisan])
    {peer, node}
  end

  test "a message crosses from one Elixir-started node to another over partisan" do
    {pa, a} = start_peer(:ex_a)
    {pb, b} = start_peer(:ex_b)

    spec_a = :erpc.call(a, :partisan, :node_spec, [])
    assert :ok == :erpc.call(b, :partisan_peer_service, :sync_join, [spec_a])
    assert {:ok, [^a, ^b]} = :erpc.call(a, :partisan_peer_service, :members, [])

    # partisan_ct:forwarder/1 passes what it receives on b to this process (over disterl)
    receiver = :erpc.call(b, :partisan_ct, :forwarder, [self()])
    msg = {:hello, "from elixir", 42}
    assert :ok == :erpc.call(a, :partisan, :forward_message, [receiver, msg, %{channel: :data}])
    assert_receive {:partisan_ct, ^receiver, ^msg}, 5_000
    # the peers never connected to each other over Distributed Erlang
    assert :erpc.call(a, :erlang, :nodes, []) == [node()]

    :peer.stop(pa)
    :peer.stop(pb)
  end
end
