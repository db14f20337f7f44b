%% Membership: join, leave, removal and rejoin; on_up/on_down callbacks and monitor_nodes;
%% stopping and restarting the application; configuration errors.
-module(partisan_membership_SUITE).

-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_testcase/2, end_per_testcase/2]).
-export([join_leave_rejoin/1, remove_other_node/1, node_events/1, restart_application/1,
         bad_config/1]).

-define(ENV, #{channels => #{data => #{parallelism => 4}},
               connection_interval => 100, connection_jitter => 100}).
-define(TIMEOUT, 10000).

all() ->
    [join_leave_rejoin, remove_other_node, node_events, restart_application, bad_config].

init_per_testcase(TC, Config) when TC =:= join_leave_rejoin; TC =:= remove_other_node ->
    {ok, Peers} = partisan_ct:start_cluster([mem_a, mem_b, mem_c], ?ENV),
    [{peers, Peers} | Config];
init_per_testcase(TC, Config) when TC =:= node_events; TC =:= restart_application ->
    Peers = [begin {ok, P} = partisan_ct:start_node(N, ?ENV), P end || N <- [mem_a, mem_b]],
    [{peers, Peers} | Config];
init_per_testcase(bad_config, Config) ->
    {ok, P} = partisan_ct:start_node(mem_cfg, ?ENV),
    [{peers, [P]} | Config].

end_per_testcase(_, Config) ->
    partisan_ct:stop_cluster(proplists:get_value(peers, Config)).

%% -- tests --------------------------------------------------------------------

join_leave_rejoin(Config) ->
    [A, B, C] = Nodes = cluster(Config),
    [?assertEqual({ok, Nodes}, rpc(N, partisan_peer_service, members, [])) || N <- Nodes],
    ok = rpc(C, partisan_peer_service, leave, []),
    wait_members([A, B], [A, B]),
    wait_members([C], [C]),
    wait(fun() -> rpc(C, partisan, nodes, []) =:= [] andalso rpc(A, partisan, nodes, []) =:= [B] end),
    ?assertEqual({error, not_connected}, rpc(A, partisan, forward_message, [C, name, hi, #{}])),
    %% Rejoin through another member than the first.
    ok = rpc(C, partisan_peer_service, sync_join, [rpc(B, partisan, node_spec, [])]),
    ok = partisan_ct:wait_fully_connected(Nodes, ?TIMEOUT),
    wait_members(Nodes, Nodes),
    assert_delivers(A, C).

%% `leave/1' of another node: it is removed everywhere and told, so it is a cluster of one.
remove_other_node(Config) ->
    [A, B, C] = cluster(Config),
    ok = rpc(A, partisan_peer_service, leave, [C]),
    wait_members([A, B], [A, B]),
    wait_members([C], [C]),
    wait(fun() -> rpc(B, partisan, nodes, []) =:= [A] end),
    ?assertNot(rpc(B, partisan_peer_service, member, [C])),
    assert_delivers(B, A).

node_events(Config) ->
    [A, B] = cluster(Config),
    Fwd = rpc(A, partisan_ct, forwarder, [self()]),
    ok = rpc(A, partisan_ct, notify_on, [up, any, Fwd]),
    ok = rpc(A, partisan_ct, notify_on, [down, B, Fwd]),
    ok = rpc(A, partisan_ct, notify_on, [down, 'other@127.0.0.1', Fwd]),
    Mon = rpc(A, partisan_ct, node_monitor, [self()]),
    ok = partisan_ct:join_all([A, B]),
    ?assertEqual({on_up, B}, recv(Fwd)),
    ?assertEqual({nodeup, B}, recv(Mon)),
    ok = rpc(B, partisan_peer_service, leave, []),
    ?assertEqual({on_down, B}, recv(Fwd)),
    ?assertEqual({nodedown, B}, recv(Mon)),
    ok = partisan_ct:join_all([A, B]),
    ?assertEqual({on_up, B}, recv(Fwd)),
    ?assertEqual({nodeup, B}, recv(Mon)),
    receive {partisan_ct, _, Unexpected} -> ct:fail({unexpected, Unexpected}) after 0 -> ok end.

restart_application(Config) ->
    [A, B] = Nodes = cluster(Config),
    ok = partisan_ct:join_all(Nodes),
    #{listen_addrs := [#{port := Port}]} = rpc(B, partisan, node_spec, []),
    ?assert(io_threads(B) > 0),
    ok = rpc(B, application, stop, [partisan]),
    ?assertEqual(#{}, rpc(B, partisan, stats, [])),
    %% Stopping closed every socket and thread of the data plane.
    ?assertEqual({error, econnrefused}, gen_tcp:connect({127, 0, 0, 1}, Port, [])),
    ?assertEqual(0, io_threads(B)),
    wait(fun() -> rpc(A, partisan, nodes, []) =:= [] end),
    {ok, _} = rpc(B, application, ensure_all_started, [partisan]),
    ?assertEqual({ok, [B]}, rpc(B, partisan_peer_service, members, [])),
    ok = partisan_ct:join_all(Nodes),
    wait_members(Nodes, Nodes),
    assert_delivers(A, B),
    assert_delivers(B, A).

%% Threads of the data plane's tokio runtime in the node's OS process.
io_threads(Node) ->
    OsPid = rpc(Node, os, getpid, []),
    Comms = filelib:wildcard("/proc/" ++ OsPid ++ "/task/*/comm"),
    length([C || C <- Comms, {ok, <<"partisan-io", _/binary>>} <- [file:read_file(C)]]).

%% A bad value stops the start with an error naming the key; the node then starts with a good
%% configuration.
bad_config(Config) ->
    [N] = cluster(Config),
    ok = rpc(N, application, stop, [partisan]),
    Bad = [{channels, #{x => #{parallelism => 0}}}, {channels, [{x, #{monotonic => yes}}]},
           {parallelism, 0}, {listen_addrs, []}, {listen_addrs, [#{ip => {1, 2, 3}, port => 1}]},
           {decode, maybe},
           {max_frame_size, 10}, {connection_interval, -1}, {cookie, <<>>},
           {peer_service_manager, nope}, {name, noname}],
    lists:foreach(fun({Key, Value}) ->
                          ok = rpc(N, application, set_env, [partisan, Key, Value]),
                          ?assertMatch({error, {partisan, {{invalid_config, Key, [_ | _]}, _}}},
                                       rpc(N, application, ensure_all_started, [partisan])),
                          ok = rpc(N, application, unset_env, [partisan, Key])
                  end, Bad),
    {ok, _} = rpc(N, application, ensure_all_started, [partisan]),
    ?assert(rpc(N, partisan, is_alive, [])).

%% -- helpers ------------------------------------------------------------------

cluster(Config) -> partisan_ct:nodes(proplists:get_value(peers, Config)).

rpc(Node, M, F, A) ->
    partisan_ct:rpc(Node, M, F, A).

wait(Fun) ->
    ?assertEqual(ok, partisan_ct:wait_until(Fun, ?TIMEOUT)).

wait_members(Nodes, Members) ->
    Has = fun(N) -> rpc(N, partisan_peer_service, members, []) =:= {ok, Members} end,
    wait(fun() -> lists:all(Has, Nodes) end).

recv(From) ->
    case partisan_ct:recv(From, ?TIMEOUT) of
        {ok, Msg} -> Msg;
        {error, timeout} -> ct:fail({no_message_from, From})
    end.

assert_delivers(From, To) ->
    [?assertEqual(ok, partisan_ct:check_delivery(From, To, C, ?TIMEOUT)) || C <- [undefined, data]].
