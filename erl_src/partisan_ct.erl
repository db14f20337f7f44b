%% @doc Helpers for multi-node Common Test suites of applications that use `partisan'.
%%
%% The node running the suite must be alive with a long name (`rebar3 ct --name ct@127.0.0.1',
%% `ct_run -name ct@127.0.0.1'): it reaches the peers over Distributed Erlang. `start_node/2' and
%% `start_cluster/2' return `{error, {not_alive, Why}}' otherwise. A peer is a `{Pid, Node}'
%% pair (`peer()'): `Pid' for `peer:stop/1', `Node' for `rpc/4'; `nodes/1' gives the names.
%%
%% Peers are started with OTP's `peer' module as longname nodes on 127.0.0.1 with
%% `-connect_all false' (they meet only over Partisan; the test node reaches each one over
%% disterl, with `erpc'), and with this node's non-OTP code paths, so the `partisan' application
%% and the caller's own modules (a suite's helper functions) load there. Every wait is a bounded
%% poll: a condition that never holds fails the test instead of hanging it.
%%
%% ```
%% {ok, Peers} = partisan_ct:start_cluster([a, b, c], #{connection_interval => 100}),
%% [A, B, _] = [N || {_, N} <- Peers],
%% Fwd = partisan_ct:rpc(B, partisan_ct, forwarder, [self()]),
%% ok = partisan_ct:rpc(A, partisan, forward_message, [Fwd, hello, #{}]),
%% receive {partisan_ct, Fwd, hello} -> ok after 10000 -> ct:fail(timeout) end,
%% ok = partisan_ct:stop_cluster(Peers).
%% '''
-module(partisan_ct).

-compile({no_auto_import, [nodes/1]}).

-export([start_cluster/2, start_node/2, join_all/1, wait_until/2, wait_fully_connected/2,
         stop_cluster/1, kill_node/1, rpc/4]).
-export([forwarder/1, node_monitor/1, notify_on/3, nodes/1, recv/2, check_delivery/4,
         check_delivery_to_a_neighbour/3]).

-define(RPC_TIMEOUT, 15000).
-define(JOIN_TIMEOUT, 10000).
-define(POLL_MS, 10).

-type peer() :: {pid(), node()}.
-type env() :: [{atom(), term()}] | #{atom() => term()}.
-export_type([peer/0, env/0]).

%% @doc Starts one peer per name, sets the `partisan' env `Env' on each, starts `partisan',
%% joins every node to the first, and waits until every node is fully connected to every
%% other one (all channels, all connections).
-spec start_cluster([atom(), ...], env()) -> {ok, [peer()]} | {error, term()}.
start_cluster(Names, Env) ->
    Started = [start_node(Name, Env) || Name <- Names],
    Peers = [P || {ok, P} <- Started],
    case [E || {error, _} = E <- Started] of
        [] ->
            case join_all([N || {_, N} <- Peers]) of
                ok -> {ok, Peers};
                Error -> stop_cluster(Peers), Error
            end;
        [Error | _] ->
            stop_cluster(Peers),
            Error
    end.

%% @doc Starts one peer named `Name@127.0.0.1' with `partisan' configured by `Env' and started,
%% not joined to anything. The peer is not linked to the caller (so `init_per_suite' may start
%% it): stop it with `stop_cluster/1'.
-spec start_node(atom(), env()) -> {ok, peer()} | {error, term()}.
start_node(Name, Env) ->
    case alive_with_long_name() of
        ok -> start_peer(Name, Env);
        {error, _} = Error -> Error
    end.

%% Peers are Name@127.0.0.1 (long names); only an alive node with long names can reach them.
alive_with_long_name() ->
    case {erlang:is_alive(), net_kernel:longnames()} of
        {true, true} ->
            ok;
        {false, _} ->
            {error, {not_alive, "partisan_ct needs this node alive with a long name: "
                     "rebar3 ct --name ct@127.0.0.1 (or ct_run -name ct@127.0.0.1, "
                     "erl -name ct@127.0.0.1)"}};
        {true, _} ->
            {error, {not_alive, lists:flatten(
                                  io_lib:format("partisan_ct needs long names (-name), not short "
                                                "names: this node is ~p; use rebar3 ct --name "
                                                "ct@127.0.0.1", [node()]))}}
    end.

start_peer(Name, Env) ->
    Args = ["-connect_all", "false", "-pa" | code_paths()],
    case peer:start(#{name => Name, host => "127.0.0.1", longnames => true, args => Args}) of
        {ok, Pid, Node} ->
            try
                [ok = rpc(Node, application, set_env, [partisan, K, V]) || {K, V} <- env_list(Env)],
                {ok, _} = rpc(Node, application, ensure_all_started, [partisan]),
                {ok, {Pid, Node}}
            catch
                Class:Reason ->
                    stop_cluster([{Pid, Node}]),
                    {error, {Class, Reason}}
            end;
        {error, _} = Error ->
            Error
    end.

%% @doc Joins every node to the first with `partisan_peer_service:sync_join/1' and waits until
%% the cluster is fully connected.
-spec join_all([node()]) -> ok | {error, term()}.
join_all([First | Rest] = Nodes) ->
    Spec = rpc(First, partisan, node_spec, []),
    Results = [rpc(N, partisan_peer_service, sync_join, [Spec]) || N <- Rest],
    case [R || R <- Results, R =/= ok] of
        [] -> wait_fully_connected(Nodes, ?JOIN_TIMEOUT);
        [Error | _] -> Error
    end.

%% @doc Polls `Fun' every 10 ms until it returns `true', for at most `TimeoutMs'.
-spec wait_until(fun(() -> boolean()), non_neg_integer()) -> ok | {error, timeout}.
wait_until(Fun, TimeoutMs) ->
    poll(Fun, erlang:monotonic_time(millisecond) + TimeoutMs).

poll(Fun, Deadline) ->
    case Fun() of
        true -> ok;
        false ->
            case erlang:monotonic_time(millisecond) >= Deadline of
                true -> {error, timeout};
                false -> receive after ?POLL_MS -> poll(Fun, Deadline) end
            end
    end.

%% @doc Waits until every node in `Nodes' has all its connections to every other one up.
-spec wait_fully_connected([node()], non_neg_integer()) -> ok | {error, timeout}.
wait_fully_connected(Nodes, Timeout) ->
    Pairs = [{N, M} || N <- Nodes, M <- Nodes, N =/= M],
    Connected = fun({N, M}) -> rpc(N, partisan, is_fully_connected, [M]) end,
    wait_until(fun() -> lists:all(Connected, Pairs) end, Timeout).

%% @doc Stops peers (already dead ones are skipped).
-spec stop_cluster([peer()]) -> ok.
stop_cluster(Peers) ->
    lists:foreach(fun({Pid, _}) -> catch peer:stop(Pid) end, Peers).

%% @doc Kills the OS process of a peer with `kill -9' and waits until it is gone (disconnected
%% from this node and its name free in epmd, so a node of the same name can start again).
-spec kill_node(node()) -> ok | {error, timeout}.
kill_node(Node) ->
    OsPid = rpc(Node, os, getpid, []),
    _ = os:cmd("kill -9 " ++ OsPid),
    [Name, Host] = string:split(atom_to_list(Node), "@"),
    wait_until(fun() ->
                       not lists:member(Node, erlang:nodes(connected))
                           andalso erl_epmd:port_please(Name, Host) =:= noport
               end, ?JOIN_TIMEOUT).

%% @doc `erpc:call/5' with a 15 s timeout.
-spec rpc(node(), module(), atom(), [term()]) -> term().
rpc(Node, M, F, A) ->
    erpc:call(Node, M, F, A, ?RPC_TIMEOUT).

%% @doc The node names of peers started by `start_cluster/2' or `start_node/2'.
-spec nodes([peer()]) -> [node()].
nodes(Peers) ->
    [N || {_, N} <- Peers].

%% @doc The next message `Forwarder' (see `forwarder/1') passed to the caller.
-spec recv(pid(), timeout()) -> {ok, term()} | {error, timeout}.
recv(Forwarder, Timeout) ->
    receive {partisan_ct, Forwarder, Msg} -> {ok, Msg} after Timeout -> {error, timeout} end.

%% @doc Sends a unique message from node `From' to a process on node `To' over `Channel' with
%% `partisan:forward_message/3' and waits until it arrives.
-spec check_delivery(node(), node(), atom(), timeout()) -> ok | {error, term()}.
check_delivery(From, To, Channel, Timeout) ->
    Fwd = rpc(To, ?MODULE, forwarder, [self()]),
    Msg = {make_ref(), From},
    case rpc(From, partisan, forward_message, [Fwd, Msg, #{channel => Channel}]) of
        ok ->
            case recv(Fwd, Timeout) of
                {ok, Msg} -> ok;
                {ok, Other} -> {error, {unexpected, Other}};
                {error, timeout} -> {error, {not_delivered, From, To, Channel}}
            end;
        Error ->
            Error
    end.

%% @doc Checks that `Node' delivers a message on `Channel' to one of its overlay neighbours
%% (`partisan:nodes/0' there) that it is fully connected to, waiting up to `Timeout' ms for one.
%% Where views change (HyParView's random promotion and shuffles) that neighbour may go away
%% meanwhile: a failed delivery is tried again with the view of then, at most three times in
%% all, and only if the first one is no longer a neighbour.
-spec check_delivery_to_a_neighbour(node(), atom(), non_neg_integer()) -> ok | {error, term()}.
check_delivery_to_a_neighbour(Node, Channel, Timeout) ->
    check_delivery_to_a_neighbour(Node, Channel, Timeout, 3).

check_delivery_to_a_neighbour(Node, Channel, Timeout, Tries) ->
    case connected_neighbour(Node, erlang:monotonic_time(millisecond) + Timeout) of
        {ok, Neighbour} ->
            case check_delivery(Node, Neighbour, Channel, Timeout) of
                ok ->
                    ok;
                Error ->
                    case Tries > 1 andalso not lists:member(Neighbour, rpc(Node, partisan, nodes, [])) of
                        true -> check_delivery_to_a_neighbour(Node, Channel, Timeout, Tries - 1);
                        false -> Error
                    end
            end;
        error ->
            {error, {no_fully_connected_neighbour, Node, rpc(Node, partisan, nodes, [])}}
    end.

connected_neighbour(Node, Deadline) ->
    case [P || P <- rpc(Node, partisan, nodes, []), rpc(Node, partisan, is_fully_connected, [P])] of
        [P | _] ->
            {ok, P};
        [] ->
            case erlang:monotonic_time(millisecond) < Deadline of
                true -> timer:sleep(?POLL_MS), connected_neighbour(Node, Deadline);
                false -> error
            end
    end.

%% @doc Spawns (on the calling node) a process that sends every message it receives to `To' as
%% `{partisan_ct, Self, Msg}'. Call it on a peer with `rpc/4' to get a receiver there.
-spec forwarder(pid()) -> pid().
forwarder(To) ->
    spawn(fun() -> forward(To) end).

%% @doc Like `forwarder/1', subscribed with `partisan:monitor_nodes(true)': `To' gets
%% `{partisan_ct, Self, {nodeup, Node}}' and `{partisan_ct, Self, {nodedown, Node}}'.
-spec node_monitor(pid()) -> pid().
node_monitor(To) ->
    Parent = self(),
    Pid = spawn(fun() ->
                        ok = partisan:monitor_nodes(true),
                        Parent ! {self(), subscribed},
                        forward(To)
                end),
    receive {Pid, subscribed} -> Pid after ?RPC_TIMEOUT -> error(timeout) end.

%% @doc Registers (on the calling node) an `on_up' or `on_down' callback for `Node' (or `any')
%% that sends `{on_up, UpNode}' or `{on_down, DownNode}' to `To'.
-spec notify_on(up | down, node() | any, pid()) -> ok | {error, term()}.
notify_on(up, Node, To) ->
    partisan_peer_service:on_up(Node, fun(N) -> To ! {on_up, N} end);
notify_on(down, Node, To) ->
    partisan_peer_service:on_down(Node, fun(N) -> To ! {on_down, N} end).

%% -- internal ---------------------------------------------------------------

forward(To) ->
    receive Msg -> To ! {partisan_ct, self(), Msg} end,
    forward(To).

env_list(Env) when is_map(Env) -> maps:to_list(Env);
env_list(Env) when is_list(Env) -> Env.

%% This node's code paths outside OTP that exist, partisan's ebin first.
code_paths() ->
    Ebin = filename:dirname(code:which(partisan)),
    Lib = code:lib_dir(),
    [Ebin | [D || D <- code:get_path(), D =/= Ebin, not lists:prefix(Lib, D),
                  filename:pathtype(D) =:= absolute, filelib:is_dir(D)]].
