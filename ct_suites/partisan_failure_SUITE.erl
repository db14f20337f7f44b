%% Node failure: a node killed with `kill -9' is seen down by the others; restarted with the same
%% name and port it reconnects by itself, and pids of its old incarnation are dead.
-module(partisan_failure_SUITE).

-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_testcase/2, end_per_testcase/2]).
-export([killed_node_is_detected/1, restarted_node_reconnects/1]).
%% Run on peers.
-export([forwarder_at/2]).

-define(ENV, #{channels => #{data => #{parallelism => 2}},
               connection_interval => 100, connection_jitter => 100}).
-define(TIMEOUT, 10000).
%% Pid number of a process in the old and in the new incarnation of a node.
-define(PID_ID, 2000).

all() ->
    [killed_node_is_detected, restarted_node_reconnects].

init_per_testcase(_, Config) ->
    EnvC = ?ENV#{listen_port => free_port()},
    Peers = [begin {ok, P} = partisan_ct:start_node(N, E), P end
             || {N, E} <- [{fail_a, ?ENV}, {fail_b, ?ENV}, {fail_c, EnvC}]],
    ok = partisan_ct:join_all([N || {_, N} <- Peers]),
    [{peers, Peers}, {env_c, EnvC} | Config].

end_per_testcase(_, Config) ->
    partisan_ct:stop_cluster(proplists:get_value(peers, Config)).

%% -- tests --------------------------------------------------------------------

killed_node_is_detected(Config) ->
    [A, B, C] = cluster(Config),
    Fwd = rpc(A, partisan_ct, forwarder, [self()]),
    ok = rpc(A, partisan_ct, notify_on, [down, C, Fwd]),
    Mon = rpc(A, partisan_ct, node_monitor, [self()]),
    ok = partisan_ct:kill_node(C),
    ?assertEqual({on_down, C}, recv(Fwd)),
    ?assertEqual({nodedown, C}, recv(Mon)),
    wait(fun() -> rpc(A, partisan, nodes, []) =:= [B] andalso rpc(B, partisan, nodes, []) =:= [A] end),
    ?assertEqual({error, not_connected}, rpc(A, partisan, forward_message, [C, name, hi, #{}])),
    %% The survivors still talk.
    FwdB = rpc(B, partisan_ct, forwarder, [self()]),
    ?assertEqual(ok, rpc(A, partisan, forward_message, [FwdB, alive, #{channel => data}])),
    ?assertEqual(alive, recv(FwdB)).

restarted_node_reconnects(Config) ->
    [A, B, C] = Nodes = cluster(Config),
    Old = rpc(C, ?MODULE, forwarder_at, [self(), ?PID_ID]),
    ?assertEqual(ok, rpc(A, partisan, forward_message, [Old, before, #{}])),
    ?assertEqual(before, recv(Old)),
    Fwd = rpc(A, partisan_ct, forwarder, [self()]),
    ok = rpc(A, partisan_ct, notify_on, [up, C, Fwd]),
    ok = partisan_ct:kill_node(C),
    wait(fun() -> rpc(A, partisan, nodes, []) =:= [B] end),
    {ok, Restarted} = partisan_ct:start_node(fail_c, proplists:get_value(env_c, Config)),
    try
        %% No join: A and B redial the same port, and gossip tells C the members.
        ok = partisan_ct:wait_fully_connected(Nodes, ?TIMEOUT),
        ?assertEqual({on_up, C}, recv(Fwd)),
        [?assertEqual({ok, Nodes}, rpc(N, partisan_peer_service, members, [])) || N <- Nodes],
        %% Same pid number, new incarnation: the old pid must not reach the new process.
        New = rpc(C, ?MODULE, forwarder_at, [self(), ?PID_ID]),
        ?assertNotEqual(Old, New),
        #{undeliverable := Undeliverable} = rpc(C, partisan, stats, []),
        %% Same partition key, so one connection: when `new' arrives, `old' was handled.
        ?assertEqual(ok, rpc(A, partisan, forward_message, [Old, old, #{partition_key => 0}])),
        ?assertEqual(ok, rpc(A, partisan, forward_message, [New, new, #{partition_key => 0}])),
        ?assertEqual(new, recv(New)),
        ?assertMatch(#{undeliverable := U} when U =:= Undeliverable + 1, rpc(C, partisan, stats, []))
    after
        partisan_ct:stop_cluster([Restarted])
    end.

%% -- run on peers ---------------------------------------------------------------

%% A `partisan_ct:forwarder/1' whose pid is `<0.Id.0>': pids are numbered in sequence, so spawn
%% and discard processes until the number comes up (fails if it is already past).
forwarder_at(To, Id) ->
    Pid = partisan_ct:forwarder(To),
    ["0", N, "0"] = string:lexemes(pid_to_list(Pid), "<.>"),
    case list_to_integer(N) of
        Id -> Pid;
        Less when Less < Id -> exit(Pid, kill), forwarder_at(To, Id)
    end.

%% -- helpers ------------------------------------------------------------------

%% A free port below the ephemeral range, so no outgoing connection takes it while its node is
%% down.
free_port() ->
    Port = 20000 + rand:uniform(10000),
    case gen_tcp:listen(Port, [{ip, {127, 0, 0, 1}}]) of
        {ok, L} -> ok = gen_tcp:close(L), Port;
        {error, eaddrinuse} -> free_port()
    end.

cluster(Config) -> partisan_ct:nodes(proplists:get_value(peers, Config)).

rpc(Node, M, F, A) ->
    partisan_ct:rpc(Node, M, F, A).

wait(Fun) ->
    ?assertEqual(ok, partisan_ct:wait_until(Fun, ?TIMEOUT)).

recv(From) ->
    case partisan_ct:recv(From, ?TIMEOUT) of
        {ok, Msg} -> Msg;
        {error, timeout} -> ct:fail({no_message_from, From})
    end.
