%% Causal delivery (`causal_label', `causal_labels') across three real nodes, with delivery
%% deliberately reordered by a receive-side interposition fun: A sends m1 to C, then m2 to B;
%% B, on m2, sends m3 to C. m1 happened before m3, but m1 is held back on its way to C.
%% Without a label C gets m3 first; with one, m3 waits in C's causal buffer for m1.
-module(partisan_causal_SUITE).

-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, init_per_suite/1, end_per_suite/1, init_per_group/2,
         end_per_group/2, end_per_testcase/2]).
-export([reordered_without_label/1, causal_order_across_three_nodes/1,
         order_kept_across_parallel_connections/1, overflow_gives_up_counted/1,
         max_wait_gives_up_counted/1,
         unknown_label_refused/1]).
%% Run on peers.
-export([hold/1, relay/0]).

-define(ENV, #{connection_interval => 100, connection_jitter => 100,
               channels => #{data => #{parallelism => 4}},
               causal_labels => [l]}).
-define(TIMEOUT, 10000).
-define(HOLD, {?MODULE, hold}).

all() -> [{group, full_mesh}, {group, hyparview}].

groups() ->
    Cases = [reordered_without_label, causal_order_across_three_nodes,
             order_kept_across_parallel_connections, overflow_gives_up_counted, max_wait_gives_up_counted, unknown_label_refused],
    [{full_mesh, [], Cases}, {hyparview, [], Cases}].

init_per_suite(Config) -> Config.

end_per_suite(_Config) -> ok.

init_per_group(Group, Config0) ->
    Config = [{env, env(Group)} | Config0],
    {ok, Peers} = partisan_ct:start_cluster([causal_a, causal_b, causal_c], env(Config)),
    [_, B, C] = partisan_ct:nodes(Peers),
    Relay = rpc(B, erlang, spawn, [?MODULE, relay, []]),
    true = rpc(B, erlang, register, [causal_relay, Relay]),
    ok = rpc(C, partisan_interposition, add_interposition_fun, [hold, fun ?MODULE:hold/1]),
    [{peers, Peers} | Config].

end_per_group(_Group, Config) ->
    partisan_ct:stop_cluster(proplists:get_value(peers, Config)).

env(Config) when is_list(Config) -> proplists:get_value(env, Config);
env(full_mesh) -> ?ENV;
env(hyparview) -> ?ENV#{peer_service_manager => partisan_hyparview_peer_service_manager}.

end_per_testcase(_Case, Config) ->
    [_, _, C] = cluster(Config),
    ok = rpc(C, persistent_term, put, [?HOLD, false]).

%% -- tests --------------------------------------------------------------------

%% The control: the interposition fun really reorders.
reordered_without_label(Config) ->
    [A, B, C] = cluster(Config),
    Sink = rpc(C, partisan_ct, forwarder, [self()]),
    ok = rpc(C, persistent_term, put, [?HOLD, true]),
    ok = rpc(A, partisan, forward_message, [Sink, {held, m1}]),
    ok = rpc(A, partisan, forward_message, [B, causal_relay, {m2, Sink, #{}}, #{}]),
    ?assertEqual({ok, m3}, partisan_ct:recv(Sink, ?TIMEOUT)),
    ok = rpc(C, persistent_term, put, [?HOLD, false]),
    ?assertEqual({ok, {held, m1}}, partisan_ct:recv(Sink, ?TIMEOUT)).

causal_order_across_three_nodes(Config) ->
    [A, B, C] = cluster(Config),
    Sink = rpc(C, partisan_ct, forwarder, [self()]),
    Opts = #{causal_label => l},
    Before = label_stats(C),
    ok = rpc(C, persistent_term, put, [?HOLD, true]),
    ok = rpc(A, partisan, forward_message, [Sink, {held, m1}, Opts]),
    ok = rpc(A, partisan, forward_message, [B, causal_relay, {m2, Sink, Opts}, Opts]),
    %% m3 has reached C and waits there for m1.
    ok = partisan_ct:wait_until(fun() -> maps:get(buffered, label_stats(C)) =:= 1 end, ?TIMEOUT),
    ok = rpc(C, persistent_term, put, [?HOLD, false]),
    ?assertEqual([{ok, {held, m1}}, {ok, m3}], [partisan_ct:recv(Sink, ?TIMEOUT) || _ <- [1, 2]]),
    After = label_stats(C),
    ?assertEqual(maps:get(delivered, Before) + 2, maps:get(delivered, After)),
    ?assertEqual(0, maps:get(buffered, After)).

%% Random partition keys spread one sender's messages over four connections, so they arrive out
%% of order; the label delivers them in the order they were sent.
order_kept_across_parallel_connections(Config) ->
    [A, _, C] = cluster(Config),
    Sink = rpc(C, partisan_ct, forwarder, [self()]),
    N = 300,
    [ok = rpc(A, partisan, forward_message,
              [Sink, I, #{causal_label => l, channel => data, partition_key => rand:uniform(64)}])
     || I <- lists:seq(1, N)],
    ?assertEqual([{ok, I} || I <- lists:seq(1, N)],
                 [partisan_ct:recv(Sink, ?TIMEOUT) || _ <- lists:seq(1, N)]).

%% On a node whose buffer holds five: m1 held, ten later messages from A wait for it; the sixth
%% arrival delivers the oldest, giving m1 up; when m1 arrives at last it is dropped as late.
overflow_gives_up_counted(Config) ->
    [A | _] = cluster(Config),
    {ok, {Pid, D}} = partisan_ct:start_node(causal_d, (env(Config))#{causal_max_buffered => 5}),
    try
        ok = partisan_ct:join_all([A, D]),
        ok = rpc(D, partisan_interposition, add_interposition_fun, [hold, fun ?MODULE:hold/1]),
        Sink = rpc(D, partisan_ct, forwarder, [self()]),
        ok = rpc(D, persistent_term, put, [?HOLD, true]),
        Opts = #{causal_label => l},
        ok = rpc(A, partisan, forward_message, [Sink, {held, m1}, Opts]),
        [ok = rpc(A, partisan, forward_message, [Sink, I, Opts]) || I <- lists:seq(2, 11)],
        ?assertEqual([{ok, I} || I <- lists:seq(2, 11)],
                     [partisan_ct:recv(Sink, ?TIMEOUT) || _ <- lists:seq(2, 11)]),
        ok = rpc(D, persistent_term, put, [?HOLD, false]),
        ok = partisan_ct:wait_until(fun() -> maps:get(late, label_stats(D)) =:= 1 end, ?TIMEOUT),
        ?assertMatch(#{skipped := 1, delivered := 10, buffered := 0}, label_stats(D)),
        %% m1 was dropped, not delivered: the next message is the next one sent.
        ok = rpc(A, partisan, forward_message, [Sink, 12, Opts]),
        ?assertEqual({ok, 12}, partisan_ct:recv(Sink, ?TIMEOUT))
    after
        partisan_ct:stop_cluster([{Pid, D}]),
        rpc(A, partisan_peer_service, leave, [D])
    end.

%% On a node where a message waits at most 200 ms: m1 held for good, m2 is delivered once it has
%% waited that long (m1 given up); m1, let go, is dropped as late.
max_wait_gives_up_counted(Config) ->
    [A | _] = cluster(Config),
    {ok, {Pid, E}} = partisan_ct:start_node(causal_e, (env(Config))#{causal_max_wait => 200}),
    try
        ok = partisan_ct:join_all([A, E]),
        ok = rpc(E, partisan_interposition, add_interposition_fun, [hold, fun ?MODULE:hold/1]),
        Sink = rpc(E, partisan_ct, forwarder, [self()]),
        ok = rpc(E, persistent_term, put, [?HOLD, true]),
        Opts = #{causal_label => l},
        ok = rpc(A, partisan, forward_message, [Sink, {held, m1}, Opts]),
        ok = rpc(A, partisan, forward_message, [Sink, m2, Opts]),
        ?assertEqual({ok, m2}, partisan_ct:recv(Sink, ?TIMEOUT)),
        ?assertMatch(#{skipped := 1, delivered := 1, buffered := 0}, label_stats(E)),
        ok = rpc(E, persistent_term, put, [?HOLD, false]),
        ok = partisan_ct:wait_until(fun() -> maps:get(late, label_stats(E)) =:= 1 end, ?TIMEOUT)
    after
        partisan_ct:stop_cluster([{Pid, E}]),
        rpc(A, partisan_peer_service, leave, [E])
    end.

unknown_label_refused(Config) ->
    [A, _, C] = cluster(Config),
    ?assertEqual({error, {unknown_causal_label, nope}},
                 rpc(A, partisan, forward_message, [C, somewhere, x, #{causal_label => nope}])).

%% -- on peers -------------------------------------------------------------------

%% Interposition fun on C: holds `{held, _}' (plain or inside a causal envelope) while the flag
%% is set, looking again every 10 ms.
hold({receive_message, _, M}) ->
    Payload = case partisan_causality_backend:unwrap(M) of
        {ok, _, P} -> P;
        error -> M
    end,
    case {Payload, persistent_term:get(?HOLD, false)} of
        {{held, _}, true} -> {'$delay', 10, M};
        _ -> M
    end;
hold({_, _, M}) ->
    M.

%% On B: on `{m2, Sink, Opts}', sends m3 to `Sink' with `Opts'.
relay() ->
    receive
        {m2, Sink, Opts} ->
            ok = partisan:forward_message(Sink, m3, Opts),
            relay()
    end.

%% -- helpers --------------------------------------------------------------------

label_stats(Node) -> maps:get(l, rpc(Node, partisan_causality_backend, stats, [])).

cluster(Config) -> partisan_ct:nodes(proplists:get_value(peers, Config)).

rpc(Node, M, F, A) -> partisan_ct:rpc(Node, M, F, A).
