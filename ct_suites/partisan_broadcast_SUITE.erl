%% Plumtree broadcast on real clusters: every node applies every update, over HyParView and
%% over the full mesh, and after a node crashes the rest still receive everything.
-module(partisan_broadcast_SUITE).

-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_testcase/2, end_per_testcase/2]).
-export([hyparview_broadcast_reaches_everyone/1, full_mesh_broadcast_reaches_everyone/1]).

-define(TIMEOUT, 20000).
-define(BCAST, #{broadcast => true, broadcast_mods => [partisan_test_store],
                 lazy_tick_period => 200, exchange_tick_period => 1000,
                 connection_interval => 100, connection_jitter => 100}).

all() -> [hyparview_broadcast_reaches_everyone, full_mesh_broadcast_reaches_everyone].

init_per_testcase(hyparview_broadcast_reaches_everyone, Config) ->
    Env = ?BCAST#{peer_service_manager => partisan_hyparview_peer_service_manager,
                  hyparview => #{active_max_size => 3, active_min_size => 2,
                                 shuffle_interval => 1000, random_promotion_interval => 500}},
    start([pb1, pb2, pb3, pb4, pb5, pb6], Env, Config);
init_per_testcase(full_mesh_broadcast_reaches_everyone, Config) ->
    start([pm1, pm2, pm3, pm4], ?BCAST, Config).

start(Names, Env, Config) ->
    Peers = [begin {ok, P} = partisan_ct:start_node(N, Env), P end || N <- Names],
    Nodes = partisan_ct:nodes(Peers),
    [ok = partisan_ct:rpc(N, partisan_test_store, start, []) || N <- Nodes],
    Seed = partisan_ct:rpc(hd(Nodes), partisan, node_spec, []),
    [ok = partisan_ct:rpc(N, partisan_peer_service, join, [Seed]) || N <- tl(Nodes)],
    [{peers, Peers} | Config].

end_per_testcase(_, Config) ->
    partisan_ct:stop_cluster(proplists:get_value(peers, Config)).

hyparview_broadcast_reaches_everyone(Config) ->
    Nodes = partisan_ct:nodes(proplists:get_value(peers, Config)),
    %% Not everyone is a neighbour of the origin: the tree carries it.
    wait(fun() -> lists:all(fun(N) -> partisan_ct:rpc(N, partisan, nodes, []) =/= [] end, Nodes) end),
    updates_reach_everyone(Nodes, 20),
    %% A node crashes; the tree is repaired and the others still get every update.
    [_, Victim | _] = Nodes,
    ok = partisan_ct:kill_node(Victim),
    updates_reach_everyone(Nodes -- [Victim], 20).

full_mesh_broadcast_reaches_everyone(Config) ->
    Nodes = partisan_ct:nodes(proplists:get_value(peers, Config)),
    ok = partisan_ct:wait_fully_connected(Nodes, ?TIMEOUT),
    updates_reach_everyone(Nodes, 20).

%% Every node of `Nodes' broadcasts `Count' updates; all nodes end with the same store.
updates_reach_everyone(Nodes, Count) ->
    Tag = make_ref(),
    [ok = partisan_ct:rpc(N, partisan_test_store, put, [{Tag, N, I}, 1, I]) || N <- Nodes, I <- lists:seq(1, Count)],
    Expected = lists:sort([{{Tag, N, I}, 1, I} || N <- Nodes, I <- lists:seq(1, Count)]),
    Has = fun(N) -> [E || {{T, _, _}, _, _} = E <- partisan_ct:rpc(N, partisan_test_store, all, []), T =:= Tag] end,
    case partisan_ct:wait_until(fun() -> lists:all(fun(N) -> Has(N) =:= Expected end, Nodes) end, ?TIMEOUT) of
        ok -> ok;
        {error, timeout} -> ct:fail({missing, [{N, length(Expected) - length(Has(N))} || N <- Nodes]})
    end.

wait(Fun) -> ?assertEqual(ok, partisan_ct:wait_until(Fun, ?TIMEOUT)).
