%% Partisan v5's manager API called the way v5 applications call it —
%% `Manager = partisan_peer_service:manager(), Manager:forward_message(...)' — on real clusters,
%% and Plumtree's tree and exchanges (`get_eager_peers/1', `get_lazy_peers/1', `debug_get_tree',
%% `exchanges', `cancel_exchanges') on a HyParView cluster.
-module(partisan_v5_api_SUITE).

-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_testcase/2, end_per_testcase/2]).
-export([manager_api_on_full_mesh/1, manager_api_and_plumtree_on_hyparview/1]).
%% Run on peers.
-export([notify_via_manager/4, sup_callback_holder/1, exchange/1]).

-define(TIMEOUT, 15000).
-define(ENV, #{connection_interval => 100, connection_jitter => 100}).

all() -> [manager_api_on_full_mesh, manager_api_and_plumtree_on_hyparview].

init_per_testcase(manager_api_on_full_mesh, Config) ->
    {ok, Peers} = partisan_ct:start_cluster([v5a, v5b, v5c], ?ENV),
    [{peers, Peers} | Config];
init_per_testcase(manager_api_and_plumtree_on_hyparview, Config) ->
    Env = ?ENV#{peer_service_manager => partisan_hyparview_peer_service_manager,
                broadcast => true, broadcast_mods => [partisan_test_store, ?MODULE],
                lazy_tick_period => 200, exchange_tick_period => 300},
    Peers = [begin {ok, P} = partisan_ct:start_node(N, Env), P end || N <- [v5h1, v5h2, v5h3]],
    Nodes = partisan_ct:nodes(Peers),
    [ok = partisan_ct:rpc(N, partisan_test_store, start, []) || N <- Nodes],
    Seed = partisan_ct:rpc(hd(Nodes), partisan, node_spec, []),
    [ok = partisan_ct:rpc(N, partisan_peer_service, join, [Seed]) || N <- tl(Nodes)],
    [{peers, Peers} | Config].

end_per_testcase(_, Config) ->
    partisan_ct:stop_cluster(proplists:get_value(peers, Config)).

%% -- tests --------------------------------------------------------------------

manager_api_on_full_mesh(Config) ->
    Nodes = [A, B, C] = cluster(Config),
    M = rpc(A, partisan_peer_service, manager, []),
    ?assertEqual(partisan_pluggable_peer_service_manager, M),
    ?assertEqual({ok, Nodes}, rpc(A, M, members, [])),
    ?assert(rpc(A, M, member, [B])),
    ?assertNot(rpc(A, M, member, ['nobody@127.0.0.1'])),
    ?assert(rpc(A, M, supports_capability, [monitoring])),
    ?assertEqual(Nodes, rpc(A, partisan_peer_service, broadcast_members, [])),

    %% The members' specs are the nodes' own.
    {ok, Specs} = rpc(A, M, members_for_orchestration, []),
    ?assertEqual(Nodes, [N || #{name := N} <- Specs]),
    [?assertEqual(maps:get(listen_addrs, rpc(N, partisan, node_spec, [])), maps:get(listen_addrs, S))
     || S = #{name := N} <- Specs],
    ?assertEqual(Nodes, rpc(A, partisan_peer_service, decode, [Specs])),
    ?assertEqual(Specs, rpc(A, M, decode, [Specs])),

    %% Messages through the manager module, every arity, to B.
    Fwd = rpc(B, partisan_ct, forwarder, [self()]),
    true = rpc(B, erlang, register, [v5_dest, Fwd]),
    Sends = [{forward_message, [B, v5_dest, m4, #{}], m4},
             {forward_message, [{v5_dest, B}, m3, #{channel => undefined}], m3},
             {forward_message, [Fwd, m2], m2},
             {cast_message, [B, v5_dest, c4, #{}], {'$gen_cast', c4}},
             {cast_message, [{v5_dest, B}, c3, []], {'$gen_cast', c3}},
             {cast_message, [Fwd, c2], {'$gen_cast', c2}},
             %% To B's manager, which delivers the v5 forwarding command.
             {send_message, [B, {forward_message, v5_dest, via_manager}], via_manager}],
    [begin
         ?assertEqual(ok, rpc(A, M, F, Args)),
         ?assertEqual({ok, Expected}, partisan_ct:recv(Fwd, ?TIMEOUT))
     end || {F, Args, Expected} <- Sends],

    %% on_down / on_up registered through the manager fire when A cuts B off and lets it back.
    ok = rpc(A, ?MODULE, notify_via_manager, [M, down, B, self()]),
    ok = rpc(A, ?MODULE, notify_via_manager, [M, up, B, self()]),
    ?assertEqual({ok, B}, rpc(A, M, inject_partition, [B, 0])),
    %% The data plane applies the partition right after (partitions/0 reads what it applied).
    wait(fun() -> rpc(A, M, partitions, []) =:= {ok, [{B, B}]} end),
    ?assertEqual({on_down, B}, recv(on_down)),
    ?assertEqual(ok, rpc(A, M, resolve_partition, [B])),
    ?assertEqual({on_up, B}, recv(on_up)),
    ?assertEqual(ok, partisan_ct:wait_fully_connected(Nodes, ?TIMEOUT)),

    %% A supervised membership callback sees C removed by update_members/1 (C left out).
    Holder = rpc(A, ?MODULE, sup_callback_holder, [self()]),
    ?assertEqual(ok, rpc(A, M, update_members, [[S || S = #{name := N} <- Specs, N =/= C]])),
    ?assertEqual(ok, wait_for_update(Holder, [A, B])),
    ?assertEqual(ok, partisan_ct:wait_until(fun() -> rpc(A, M, members, []) =:= {ok, [A, B]} end,
                                            ?TIMEOUT)),
    ?assertEqual({error, no_available_slots}, rpc(A, M, reserve, [tag])).

manager_api_and_plumtree_on_hyparview(Config) ->
    Nodes = [A, B, C] = cluster(Config),
    M = rpc(A, partisan_peer_service, manager, []),
    ?assertEqual(partisan_hyparview_peer_service_manager, M),
    %% Three nodes, room for six neighbours: each ends with the two others in its active view.
    wait(fun() -> lists:all(fun(N) -> rpc(N, M, members, []) =:= {ok, Nodes} end, Nodes) end),
    {ok, #{active := Active}} = rpc(A, M, get_local_state, []),
    ?assertEqual([B, C], lists:sort(Active)),
    {ok, Specs} = rpc(A, M, members_for_orchestration, []),
    ?assertEqual(Nodes, [N || #{name := N} <- Specs]),

    Fwd = rpc(C, partisan_ct, forwarder, [self()]),
    ?assertEqual(ok, rpc(A, M, forward_message, [C, Fwd, hv, #{}])),
    ?assertEqual({ok, hv}, partisan_ct:recv(Fwd, ?TIMEOUT)),
    ?assertEqual(ok, rpc(A, M, cast_message, [Fwd, hvc])),
    ?assertEqual({ok, {'$gen_cast', hvc}}, partisan_ct:recv(Fwd, ?TIMEOUT)),

    %% The tree: every neighbour is an eager or a lazy peer, never both, for any root.
    Peers = fun(N, Root) -> {rpc(N, partisan_plumtree_broadcast, get_eager_peers, [Root]),
                             rpc(N, partisan_plumtree_broadcast, get_lazy_peers, [Root])} end,
    Consistent = fun() ->
                         lists:all(fun(N) ->
                                           {E, L} = Peers(N, A),
                                           lists:sort(E ++ L) =:= Nodes -- [N]
                                   end, Nodes)
                 end,
    wait(Consistent),
    %% Broadcasts in a triangle deliver duplicates, which prune links to lazy ones.
    [ok = rpc(A, partisan_test_store, put, [{k, I}, 1, I]) || I <- lists:seq(1, 5)],
    wait(fun() -> lists:all(fun(N) -> length(rpc(N, partisan_test_store, all, [])) =:= 5 end, Nodes) end),
    wait(fun() -> Consistent() andalso lists:any(fun(N) -> element(2, Peers(N, A)) =/= [] end, Nodes) end),
    %% The same from afar: each node's answer over Partisan is its own.
    Tree = rpc(A, partisan_plumtree_broadcast, debug_get_tree, [A, Nodes, 5000]),
    ?assertEqual([{N, rpc(N, partisan_plumtree_broadcast, get_peers, [A])} || N <- Nodes], Tree),
    {E3, L3, Info} = rpc(A, partisan_plumtree_broadcast, debug_get_peers, [B, C, [node_spec], 5000]),
    ?assertEqual(Nodes -- [B], lists:sort(E3 ++ L3)),
    ?assertMatch(#{node_spec := #{name := C}}, Info),
    ?assertEqual([{'nobody@127.0.0.1', down}],
                 rpc(A, partisan_plumtree_broadcast, debug_get_tree, [A, ['nobody@127.0.0.1'], 1000])),

    %% Exchanges: this suite's exchange/1 starts one at every tick; they are listed (also from
    %% another node) and cancelled.
    wait(fun() -> rpc(A, partisan_peer_service, exchanges, []) =/= [] end),
    wait(fun() -> rpc(B, partisan_peer_service, exchanges, [A]) =/= [] end),
    Cancelled = rpc(A, partisan_peer_service, cancel_exchanges, [{mod, ?MODULE}]),
    ?assertNotEqual([], Cancelled),
    [?assertMatch({?MODULE, _, _, _}, E) || E <- Cancelled],
    wait(fun() -> not lists:any(fun({_, _, _, P}) -> rpc(A, erlang, is_process_alive, [P]) end, Cancelled) end),
    Now = rpc(A, partisan_plumtree_broadcast, exchanges, []),
    ?assertEqual([], [E || E <- Now, lists:member(E, Cancelled)]).

%% -- run on peers ---------------------------------------------------------------

%% Registers an `on_up'/`on_down' callback for `Node' through the manager module `M'.
notify_via_manager(M, up, Node, To) -> M:on_up(Node, fun(N) -> To ! {on_up, N} end);
notify_via_manager(M, down, Node, To) -> M:on_down(Node, fun(N) -> To ! {on_down, N} end).

%% A process that lives as long as the test and holds a supervised membership callback passing
%% each update's member names to `To'.
sup_callback_holder(To) ->
    Parent = self(),
    Pid = spawn(fun() ->
                        Self = self(),
                        ok = partisan_peer_service:add_sup_callback(
                               fun(State) -> To ! {members, Self, partisan_peer_service:decode(State)} end),
                        Parent ! {self(), ready},
                        receive stop -> ok end
                end),
    receive {Pid, ready} -> Pid after ?TIMEOUT -> error(timeout) end.

%% The broadcast handler's anti-entropy: an exchange process that waits to be cancelled.
exchange(_Node) ->
    {ok, spawn(fun() -> receive stop -> ok after 30000 -> ok end end)}.

%% -- helpers --------------------------------------------------------------------

cluster(Config) -> partisan_ct:nodes(proplists:get_value(peers, Config)).

rpc(N, M, F, A) -> partisan_ct:rpc(N, M, F, A).

recv(Tag) ->
    receive {Tag, _} = Msg -> Msg after ?TIMEOUT -> {error, {timeout, Tag}} end.

wait_for_update(Holder, Expected) ->
    receive
        {members, Holder, Expected} -> ok;
        {members, Holder, _Other} -> wait_for_update(Holder, Expected)
    after ?TIMEOUT -> {error, timeout}
    end.

wait(Fun) -> ?assertEqual(ok, partisan_ct:wait_until(Fun, ?TIMEOUT)).
