%% `[partisan, ...]' telemetry events on real clusters, each from a real cause: nodes joining and
%% leaving, a node killed, a peer with the wrong cookie, a receiver frozen until its sender's
%% queue is full, messages to nowhere, a broadcast. The peers run the `telemetry' library built
%% from source (`partisan_telemetry_ct:build/1'); partisan starts it as an optional application.
%% A node without it starts and counts as before.
-module(partisan_telemetry_SUITE).

-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1]).
-export([connections_nodes_and_membership/1, auth_failures/1, queue_full_and_drops/1,
         broadcast_delivered/1, runs_without_telemetry/1]).
%% Run on peers.
-export([send_flood/3]).

-define(ENV, #{channels => #{data => #{parallelism => 2}},
               connection_interval => 100, connection_jitter => 50}).
-define(TIMEOUT, 10000).

all() ->
    [connections_nodes_and_membership, auth_failures, queue_full_and_drops,
     broadcast_delivered, runs_without_telemetry].

init_per_suite(Config) ->
    case partisan_telemetry_ct:build(proplists:get_value(priv_dir, Config)) of
        {ok, Ebin} ->
            %% partisan_ct gives the peers this node's non-OTP code paths.
            true = code:add_patha(Ebin),
            [{telemetry_ebin, Ebin} | Config];
        {skip, Why} ->
            {skip, Why}
    end.

end_per_suite(Config) ->
    code:del_path(proplists:get_value(telemetry_ebin, Config)),
    ok.

%% -- tests --------------------------------------------------------------------

%% Joins: a membership change naming who joined, one connection up per (channel, index) with
%% both in the metadata, node up. A leave: a membership change naming who left. A kill: every
%% connection to the dead node down with the reason the data plane saw, then node down.
connections_nodes_and_membership(_Config) ->
    {ok, Peers} = start([tel_a, tel_b, tel_c], ?ENV),
    [A, B, C] = partisan_ct:nodes(Peers),
    try
        [ok = rpc(N, partisan_telemetry_ct, attach, []) || N <- [A, B, C]],
        ?assert(rpc(A, partisan_telemetry, available, [])),
        ok = partisan_ct:join_all([A, B, C]),
        %% A dials, per peer: the default channel, data (2), the membership channel.
        Links = lists:sort([{undefined, 0}, {data, 0}, {data, 1}, {partisan_membership, 0}]),
        wait(fun() -> length(events(A, [partisan, connection, up])) >= 2 * length(Links) end),
        Ups = events(A, [partisan, connection, up]),
        [?assertEqual(Links, lists:sort([{Ch, I} || {_, #{count := 1}, #{node := N1, channel := Ch,
                                                                       connection := I}, _} <- Ups,
                                                    N1 =:= N]))
         || N <- [B, C]],
        wait(fun() -> lists:sort([N || {_, _, #{node := N}, _} <- events(A, [partisan, node, up])])
                          =:= [B, C] end),
        Joined = lists:append([J || {_, _, #{joined := J}, _} <- events(A, [partisan, membership, change])]),
        ?assertEqual([B, C], lists:sort(Joined)),
        {_, #{members := 3}, #{node := A, members := Members}, _} =
            lists:last(events(A, [partisan, membership, change])),
        ?assertEqual([A, B, C], lists:sort(Members)),

        %% C leaves.
        ok = rpc(C, partisan_peer_service, leave, []),
        wait(fun() -> [L || {_, _, #{left := [_ | _] = L}, _} <- events(A, [partisan, membership, change])]
                          =:= [[C]] end),

        %% B is killed: every connection A dialed to B goes down, before B's node down.
        ok = partisan_ct:kill_node(B),
        wait(fun() -> events(A, [partisan, node, down]) =/= [] end),
        Downs = [E || E = {_, _, #{node := N}, _} <- events(A, [partisan, connection, down]), N =:= B],
        ct:pal("connection down at ~p when ~p was killed: ~p", [A, B, Downs]),
        ?assertEqual(Links, lists:sort([{Ch, I} || {_, _, #{channel := Ch, connection := I}, _} <- Downs])),
        [?assert(lists:member(R, [closed, connection_reset, write_failed])) || {_, _, #{reason := R}, _} <- Downs],
        [{_, _, #{node := B}, NodeDownAt}] =
            [E || E = {_, _, #{node := N}, _} <- events(A, [partisan, node, down]), N =:= B],
        ?assert(lists:all(fun({_, _, _, T}) -> T =< NodeDownAt end, Downs))
    after
        partisan_ct:stop_cluster(Peers)
    end.

%% A node with another cookie joins: the node it dials reports inbound failures from its address
%% (bad_proof), the intruder reports outbound failures (refused by the node it dialed). Reported
%% in aggregate: once the intruder is gone, the counts add up to the `auth_failures' counter.
auth_failures(_Config) ->
    {ok, [Good]} = start([tel_good], ?ENV),
    {ok, [Bad]} = start([tel_bad], ?ENV#{cookie => <<"not the cookie">>}),
    [G, X] = partisan_ct:nodes([Good, Bad]),
    try
        [ok = rpc(N, partisan_telemetry_ct, attach, []) || N <- [G, X]],
        ok = rpc(X, partisan_peer_service, join, [rpc(G, partisan, node_spec, [])]),
        wait(fun() -> events(G, [partisan, auth, failure]) =/= [] andalso
                          events(X, [partisan, auth, failure]) =/= [] end),
        [{_, #{count := _}, In, _} | _] = events(G, [partisan, auth, failure]),
        ?assertEqual(#{direction => inbound, peer => {127, 0, 0, 1}, reason => bad_proof}, In),
        [{_, #{count := _}, Out, _} | _] = events(X, [partisan, auth, failure]),
        ?assertEqual(#{direction => outbound, peer => G, reason => refused}, Out),
        partisan_ct:stop_cluster([Bad]),
        %% With the intruder gone, the reports (a second apart at most) catch up with the counter.
        Reported = fun() -> lists:sum([N || {_, #{count := N}, _, _} <- events(G, [partisan, auth, failure])]) end,
        wait(fun() -> #{auth_failures := T} = rpc(G, partisan, stats, []), T =:= Reported() end),
        #{auth_failures := Total} = rpc(G, partisan, stats, []),
        ct:pal("~b auth failures at ~p, ~b events", [Total, G, length(events(G, [partisan, auth, failure]))]),
        ?assert(Total > 0),
        ?assert(rpc(G, partisan, nodes, []) =:= [])
    after
        partisan_ct:stop_cluster([Good, Bad])
    end.

%% The receiver is frozen (SIGSTOP): the sender's queue to it fills, and a flood of 20,000 sends
%% refused with queue_full is reported as a few events whose counts add up to the counter
%% exactly. Messages to a node that is not connected and to a process that does not exist are
%% reported as dropped, with their reason, on the side that dropped them.
queue_full_and_drops(_Config) ->
    {ok, Peers} = start([tel_send, tel_recv], ?ENV#{max_queue_bytes => 1 bsl 20}),
    [S, R] = partisan_ct:nodes(Peers),
    ok = partisan_ct:join_all([S, R]),
    OsPid = rpc(R, os, getpid, []),
    try
        [ok = rpc(N, partisan_telemetry_ct, attach, []) || N <- [S, R]],
        Fwd = rpc(R, partisan_ct, forwarder, [self()]),
        _ = os:cmd("kill -STOP " ++ OsPid),
        {Oks, Refused} = rpc(S, ?MODULE, send_flood, [Fwd, 8192, 20000]),
        ct:pal("receiver frozen: ~b sends ok, then ~b refused with queue_full", [Oks, Refused]),
        ?assert(Refused > 0),
        _ = os:cmd("kill -CONT " ++ OsPid),
        #{dropped_queue_full := QF} = rpc(S, partisan, stats, []),
        ?assertEqual(Refused, QF),
        %% The reports (a second apart at most) add up to the counter.
        wait(fun() -> lists:sum([N || {_, #{count := N}, _, _} <- events(S, [partisan, queue, full])]) =:= QF end),
        Full = events(S, [partisan, queue, full]),
        ?assert(length(Full) =< 5),
        [?assertEqual(#{node => R, channel => undefined}, M) || {_, _, M, _} <- Full],
        DroppedFull = [N || {_, #{count := N}, #{reason := queue_full}, _}
                                <- events(S, [partisan, message, dropped])],
        ?assertEqual(QF, lists:sum(DroppedFull)),

        %% Nowhere to go: a node that is not connected (at the sender), a name nobody has
        %% registered (at the receiver).
        ?assertEqual({error, not_connected},
                     rpc(S, partisan, forward_message, ['nobody@127.0.0.1', some_name, hi, #{}])),
        ?assertEqual(ok, rpc(S, partisan, forward_message, [R, no_such_name, hi, #{channel => data}])),
        wait(fun() ->
                     [M || {_, #{count := 1}, M = #{reason := not_connected}, _}
                               <- events(S, [partisan, message, dropped])]
                         =:= [#{reason => not_connected, node => 'nobody@127.0.0.1', channel => undefined}]
                 andalso
                     [M || {_, #{count := 1}, M = #{reason := undeliverable}, _}
                               <- events(R, [partisan, message, dropped])]
                         =:= [#{reason => undeliverable, node => S, channel => undefined}]
             end)
    after
        _ = os:cmd("kill -CONT " ++ OsPid),
        partisan_ct:stop_cluster(Peers)
    end.

%% A broadcast is delivered to the other node's handler: one event there, new the first time.
broadcast_delivered(_Config) ->
    Env = ?ENV#{broadcast => true, broadcast_mods => [partisan_test_store],
                lazy_tick_period => 100, exchange_tick_period => 1000},
    {ok, Peers} = start([tel_bc_a, tel_bc_b], Env),
    [A, B] = partisan_ct:nodes(Peers),
    try
        ok = partisan_ct:join_all([A, B]),
        [ok = rpc(N, partisan_test_store, start, []) || N <- [A, B]],
        ok = rpc(B, partisan_telemetry_ct, attach, []),
        ok = rpc(A, partisan_test_store, put, [k, 1, <<"v1">>]),
        wait(fun() -> rpc(B, partisan_test_store, get, [k]) =:= {1, <<"v1">>} end),
        wait(fun() -> events(B, [partisan, broadcast, delivered]) =/= [] end),
        [{_, #{count := 1, size := Size}, Meta, _} | _] = events(B, [partisan, broadcast, delivered]),
        ?assertEqual(#{from => A, handler => partisan_test_store, new => true}, Meta),
        ?assertEqual(byte_size(term_to_binary(<<"v1">>)), Size)
    after
        partisan_ct:stop_cluster(Peers)
    end.

%% Without telemetry in the code path: partisan starts, emits nothing, counts as before.
runs_without_telemetry(Config) ->
    Ebin = proplists:get_value(telemetry_ebin, Config),
    true = code:del_path(Ebin),
    Started = (catch start([tel_plain_a, tel_plain_b], ?ENV)),
    true = code:add_patha(Ebin),
    {ok, Peers} = Started,
    [A, B] = partisan_ct:nodes(Peers),
    try
        ?assertEqual(non_existing, rpc(A, code, which, [telemetry])),
        ?assertNot(rpc(A, partisan_telemetry, available, [])),
        ?assertEqual(ok, rpc(A, partisan_telemetry, execute, [[partisan, test], #{count => 1}, #{}])),
        ok = partisan_ct:join_all([A, B]),
        ?assertEqual({error, not_connected},
                     rpc(A, partisan, forward_message, ['nobody@127.0.0.1', x, hi, #{}])),
        ?assertMatch(#{dropped_not_connected := 1}, rpc(A, partisan, stats, []))
    after
        partisan_ct:stop_cluster(Peers)
    end.

%% -- run on peers ---------------------------------------------------------------

%% Sends binaries of `Size' bytes to `Dest' until `Max' sends were refused with queue_full (or
%% 10 * `Max' sends were tried): `{Oks, Refused}'.
send_flood(Dest, Size, Max) ->
    Bin = binary:copy(<<"x">>, Size),
    send_flood(Dest, Bin, Max, 10 * Max, 0, 0).

send_flood(_, _, Max, _, Oks, Max) -> {Oks, Max};
send_flood(_, _, _, 0, Oks, Refused) -> {Oks, Refused};
send_flood(Dest, Bin, Max, Tries, Oks, Refused) ->
    case partisan:forward_message(Dest, Bin, #{partition_key => 0}) of
        ok -> send_flood(Dest, Bin, Max, Tries - 1, Oks + 1, Refused);
        {error, queue_full} -> send_flood(Dest, Bin, Max, Tries - 1, Oks, Refused + 1)
    end.

%% -- helpers --------------------------------------------------------------------

start(Names, Env) ->
    Started = [partisan_ct:start_node(N, Env) || N <- Names],
    case [E || {error, _} = E <- Started] of
        [] -> {ok, [P || {ok, P} <- Started]};
        [E | _] -> partisan_ct:stop_cluster([P || {ok, P} <- Started]), E
    end.

events(Node, Name) ->
    rpc(Node, partisan_telemetry_ct, events, [Name]).

rpc(Node, M, F, A) ->
    partisan_ct:rpc(Node, M, F, A).

wait(Fun) ->
    ?assertEqual(ok, partisan_ct:wait_until(Fun, ?TIMEOUT)).
