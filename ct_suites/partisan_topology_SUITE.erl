%% Managers other than the full mesh, on real clusters: client-server (8 nodes: 3 servers and 5
%% clients, then a third of them killed) and static (links exactly as joined).
-module(partisan_topology_SUITE).

-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_testcase/2, end_per_testcase/2]).
-export([client_server_links_and_failures/1, client_server_heals_after_a_partition/1,
         static_links_only_joined_pairs/1]).

-define(TIMEOUT, 10000).
-define(BASE, #{channels => #{data => #{parallelism => 2}},
                connection_interval => 100, connection_jitter => 100}).
-define(SERVERS, [cs_s1, cs_s2, cs_s3]).
-define(CLIENTS, [cs_c1, cs_c2, cs_c3, cs_c4, cs_c5]).

all() ->
    [client_server_links_and_failures, client_server_heals_after_a_partition,
     static_links_only_joined_pairs].

init_per_testcase(TC, Config) when TC =:= client_server_links_and_failures;
                                   TC =:= client_server_heals_after_a_partition ->
    CS = ?BASE#{peer_service_manager => partisan_client_server_peer_service_manager},
    Peers = [start(N, CS#{tag => server}) || N <- ?SERVERS] ++
            [start(N, CS#{tag => client}) || N <- ?CLIENTS],
    [{peers, Peers} | Config];
init_per_testcase(static_links_only_joined_pairs, Config) ->
    Static = ?BASE#{peer_service_manager => partisan_static_peer_service_manager},
    [{peers, [start(N, Static) || N <- [st_a, st_b, st_c]]} | Config].

end_per_testcase(_, Config) ->
    partisan_ct:stop_cluster(proplists:get_value(peers, Config)).

%% -- tests --------------------------------------------------------------------

client_server_links_and_failures(Config) ->
    Nodes = [N || {_, N} <- proplists:get_value(peers, Config)],
    {Servers, Clients} = lists:split(length(?SERVERS), Nodes),
    [S1 | _] = Servers,
    Seed = rpc(S1, partisan, node_spec, []),
    [ok = rpc(N, partisan_peer_service, join, [Seed]) || N <- tl(Nodes)],
    All = lists:sort(Nodes),
    wait(fun() -> lists:all(fun(N) -> members(N) =:= All end, Nodes) end),
    Expected = fun(N) -> case lists:member(N, Servers) of
                             true -> lists:sort(Nodes -- [N]);
                             false -> lists:sort(Servers)
                         end end,
    wait(fun() -> lists:all(fun(N) -> rpc(N, partisan, nodes, []) =:= Expected(N) end, Nodes) end),
    %% A node is up with its first link; its other links (data channel) follow.
    wait(fun() -> lists:all(fun(N) -> lists:all(fun(P) -> rpc(N, partisan, is_fully_connected, [P]) end,
                                                Expected(N)) end, Nodes) end),
    %% Clients talk through servers only: a client has no link to another client.
    [C1, C2 | _] = Clients,
    ?assertEqual({error, not_connected}, rpc(C1, partisan, forward_message, [C2, x, hi, #{}])),
    assert_delivers(C1, S1),
    assert_delivers(S1, C2),

    %% Kill a third of the cluster (one server, two clients): the rest stays linked as before.
    Killed = [lists:last(Servers), C1, C2],
    [ok = partisan_ct:kill_node(N) || N <- Killed],
    Alive = Nodes -- Killed,
    wait(fun() -> lists:all(fun(N) -> rpc(N, partisan, nodes, []) =:= Expected(N) -- Killed end, Alive) end),
    [assert_delivers(C, S) || C <- Clients -- Killed, S <- Servers -- Killed].

%% Cut the clients off from one server (both directions): they keep the other servers; once the
%% partition is resolved every link comes back by itself.
client_server_heals_after_a_partition(Config) ->
    Nodes = [N || {_, N} <- proplists:get_value(peers, Config)],
    {Servers, Clients} = lists:split(length(?SERVERS), Nodes),
    Seed = rpc(hd(Servers), partisan, node_spec, []),
    [ok = rpc(N, partisan_peer_service, join, [Seed]) || N <- tl(Nodes)],
    Expected = fun(N) -> case lists:member(N, Servers) of
                             true -> lists:sort(Nodes -- [N]);
                             false -> lists:sort(Servers)
                         end end,
    Linked = fun(Exp) -> fun() -> lists:all(fun(N) -> rpc(N, partisan, nodes, []) =:= Exp(N) end, Nodes) end end,
    wait(Linked(Expected)),
    Cut = lists:last(Servers),
    [{ok, _} = rpc(C, partisan_peer_service, inject_partition, [Cut, 0]) || C <- Clients],
    [{ok, _} = rpc(Cut, partisan_peer_service, inject_partition, [C, 0]) || C <- Clients],
    Split = fun(N) when N =:= Cut -> lists:sort(Servers -- [Cut]);
               (N) -> case lists:member(N, Clients) of
                          true -> lists:sort(Servers -- [Cut]);
                          false -> Expected(N)
                      end end,
    wait(Linked(Split)),
    [ok = rpc(C, partisan_peer_service, resolve_partition, [Cut]) || C <- Clients],
    [ok = rpc(Cut, partisan_peer_service, resolve_partition, [C]) || C <- Clients],
    wait(Linked(Expected)),
    %% A node is up with its first link; the data channel's links follow their own redials.
    wait(fun() -> lists:all(fun(C) -> rpc(C, partisan, is_fully_connected, [Cut]) end, Clients) end),
    [assert_delivers(C, Cut) || C <- Clients].

static_links_only_joined_pairs(Config) ->
    [A, B, C] = [N || {_, N} <- proplists:get_value(peers, Config)],
    SpecB = rpc(B, partisan, node_spec, []),
    ok = rpc(A, partisan_peer_service, sync_join, [SpecB]),
    ok = rpc(C, partisan_peer_service, sync_join, [SpecB]),
    wait(fun() -> rpc(B, partisan, nodes, []) =:= lists:sort([A, C]) end),
    ok = partisan_ct:wait_fully_connected([A, B], ?TIMEOUT),
    ok = partisan_ct:wait_fully_connected([B, C], ?TIMEOUT),
    %% B gossiped its whole table (C included) to A on link up; A must still not link to C.
    ?assertEqual({error, timeout}, partisan_ct:wait_until(fun() -> rpc(A, partisan, nodes, []) =/= [B] end, 1000)),
    ?assertEqual([B], rpc(C, partisan, nodes, [])),
    assert_delivers(A, B),
    assert_delivers(C, B).

%% -- helpers ------------------------------------------------------------------

start(Name, Env) ->
    {ok, Peer} = partisan_ct:start_node(Name, Env),
    Peer.

rpc(Node, M, F, A) -> partisan_ct:rpc(Node, M, F, A).

members(Node) ->
    {ok, Members} = rpc(Node, partisan_peer_service, members, []),
    Members.

wait(Fun) -> ok = partisan_ct:wait_until(Fun, ?TIMEOUT).

assert_delivers(From, To) ->
    ?assertEqual(ok, partisan_ct:check_delivery(From, To, data, ?TIMEOUT)).
