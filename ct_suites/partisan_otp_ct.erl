%% Helpers for the OTP-layer suites: cluster setup for the full mesh and HyParView groups, and
%% functions that run on peers (callers whose outcome is reported back to the test process).
-module(partisan_otp_ct).

-export([groups/1, start_group/2, stop_group/1, nodes/1, pair/1, with_pair/1, ab/1, rpc/4, connected/1,
         wait/1, wait/2, recv/1, recv/2, start_victim/2, quiet/1, no_leaks/1, partition/2, heal/2]).
%% Run on peers.
-export([call/4, async/3, call_then_mailbox/4, await_call_inside/2, report/2, agent/1, in/2,
         agent_msg/1, agent_msg/2, no_agent_msg/2]).

-include_lib("stdlib/include/assert.hrl").

-compile({no_auto_import, [nodes/1]}).

-define(TIMEOUT, 20000).
-define(MESH_ENV, #{channels => #{data => #{parallelism => 2}},
                    connection_interval => 100, connection_jitter => 100}).
%% Active views of at most 3 of the 4 other nodes, so that every node has a non-neighbour and the OTP layer
%% travels through the overlay; fast probes, so a lost node is noticed within a second.
-define(HV_ENV, ?MESH_ENV#{peer_service_manager => partisan_hyparview_peer_service_manager,
                           hyparview => #{active_max_size => 3, active_min_size => 2,
                                          shuffle_interval => 1000,
                                          random_promotion_interval => 500},
                           monitor_probe_interval => 200, monitor_probe_timeout => 1000}).

%% The same tests on the full mesh and on HyParView.
groups(Tests) -> [{full_mesh, [], Tests}, {hyparview, [], Tests}].

%% Starts the group's cluster: `full_mesh' (3 nodes) or `hyparview' (5 nodes, one component).
start_group(full_mesh, Prefix) ->
    Names = [list_to_atom(Prefix ++ integer_to_list(I)) || I <- [1, 2, 3]],
    {ok, Peers} = partisan_ct:start_cluster(Names, ?MESH_ENV),
    [{peers, Peers}, {env, ?MESH_ENV}, {overlay, full_mesh}];
start_group(hyparview, Prefix) ->
    Names = [list_to_atom(Prefix ++ "h" ++ integer_to_list(I)) || I <- [1, 2, 3, 4, 5]],
    Peers = [begin {ok, P} = partisan_ct:start_node(N, ?HV_ENV), P end || N <- Names],
    [{_, Seed} | Rest] = Peers,
    Spec = rpc(Seed, partisan, node_spec, []),
    [ok = rpc(N, partisan_peer_service, join, [Spec]) || {_, N} <- Rest],
    Config = [{peers, Peers}, {env, ?HV_ENV}, {overlay, hyparview}],
    wait(fun() -> connected(nodes(Config)) end),
    Config.

stop_group(Config) ->
    partisan_ct:stop_cluster(proplists:get_value(peers, Config)).

nodes(Config) -> partisan_ct:nodes(proplists:get_value(peers, Config)).

%% Two nodes of the group; on HyParView the second is not a neighbour of the first when such a
%% pair exists, so calls and monitors between them go through the overlay.
pair(Config) ->
    Nodes = nodes(Config),
    NotLinked = [{A, B} || A <- Nodes, B <- Nodes, A =/= B, not rpc(A, partisan, is_connected, [B])],
    case {proplists:get_value(overlay, Config), NotLinked} of
        {hyparview, [Pair | _]} -> Pair;
        _ -> {hd(Nodes), lists:nth(2, Nodes)}
    end.

%% The test's pair (see pair/1) added to the config as `a' and `b'.
with_pair(Config) ->
    %% On HyParView, calls between the pair go through the overlay: start each case on an
    %% overlay where every node reaches every other (a view that the previous case's victim
    %% left incomplete may still be repairing), or a call could wait out its timeout.
    proplists:get_value(overlay, Config) =:= hyparview andalso
        (ok = wait(fun() -> connected(nodes(Config)) end)),
    {A, B} = pair(Config),
    [{a, A}, {b, B} | Config].

ab(Config) -> {proplists:get_value(a, Config), proplists:get_value(b, Config)}.

%% A node for a test that kills or cuts it off, joined to the group's cluster.
start_victim(Name, Config) ->
    {ok, {_, Node} = Peer} = partisan_ct:start_node(Name, proplists:get_value(env, Config)),
    Seed = hd(nodes(Config)),
    ok = rpc(Node, partisan_peer_service, join, [rpc(Seed, partisan, node_spec, [])]),
    All = [Node | nodes(Config)],
    case proplists:get_value(overlay, Config) of
        full_mesh -> ok = partisan_ct:wait_fully_connected(All, ?TIMEOUT);
        hyparview -> wait(fun() -> connected(All) end)
    end,
    Peer.

%% Every node reaches every other through the active views.
%% Whether the overlay's neighbour relation (`partisan:nodes/0') connects `Nodes'.
connected(Nodes) ->
    Views = maps:from_list([{N, rpc(N, partisan, nodes, [])} || N <- Nodes]),
    lists:all(fun(N) -> reach([N], Views, []) =:= lists:sort(Nodes) end, Nodes).

reach([], _, Seen) -> lists:sort(Seen);
reach([N | Rest], Views, Seen) ->
    case lists:member(N, Seen) of
        true -> reach(Rest, Views, Seen);
        false -> reach(maps:get(N, Views, []) ++ Rest, Views, [N | Seen])
    end.

%% Cuts every link between `Node' and `Others', both ways, and refuses new ones.
partition(Node, Others) ->
    [{ok, _} = rpc(Node, partisan_peer_service, inject_partition, [O, 0]) || O <- Others],
    [{ok, _} = rpc(O, partisan_peer_service, inject_partition, [Node, 0]) || O <- Others],
    ok.

heal(Node, Others) ->
    [ok = rpc(Node, partisan_peer_service, resolve_partition, [O]) || O <- Others],
    [ok = rpc(O, partisan_peer_service, resolve_partition, [Node]) || O <- Others],
    ok.

rpc(Node, M, F, A) -> partisan_ct:rpc(Node, M, F, A).

wait(Fun) -> wait(Fun, ?TIMEOUT).
wait(Fun, Timeout) -> ?assertEqual(ok, partisan_ct:wait_until(Fun, Timeout)).

recv(Tag) -> recv(Tag, ?TIMEOUT).
recv(Tag, Timeout) ->
    receive {Tag, Msg} -> Msg after Timeout -> ct:fail({no_message, Tag}) end.

%% Nothing is pending in the OTP layer of the group's nodes (or `Nodes'): no monitor, watch or
%% waiting call is left.
no_leaks(Config) when is_tuple(hd(Config)) ->
    no_leaks(nodes(Config));
no_leaks(Nodes) ->
    Empty = fun(N) ->
                    Info = rpc(N, partisan_monitor, info, []),
                    Stats = rpc(N, partisan, stats, []),
                    maps:with([out, in, owners, node_watches], Info) =:=
                        #{out => 0, in => 0, owners => 0, node_watches => 0}
                        andalso maps:get(calls_waiting, Stats) =:= 0
                        andalso rpc(N, partisan_call_relay, pending, []) =:= 0
            end,
    case partisan_ct:wait_until(fun() -> lists:all(Empty, Nodes) end, ?TIMEOUT) of
        ok -> ok;
        {error, timeout} ->
            ct:fail({leaked, [{N, rpc(N, partisan_monitor, info, []),
                               maps:get(calls_waiting, rpc(N, partisan, stats, [])),
                               rpc(N, partisan_call_relay, pending, [])} || N <- Nodes]})
    end.

%% The messages in the mailbox of a peer process, `[]' if none.
quiet(Pid) -> element(2, rpc(node(Pid), erlang, process_info, [Pid, messages])).

%% -- run on peers ----------------------------------------------------------------

%% `Mod:Fun(Args...)', with an exit turned into `{exit, Reason}'.
call(M, F, A, _) ->
    try {ok, erlang:apply(M, F, A)} catch exit:Reason -> {exit, Reason} end.

%% Spawns a process that runs `{M, F, A}' and sends `{Tag, Outcome}' to `To'; returns its pid.
async({M, F, A}, Tag, To) ->
    spawn(fun() -> To ! {Tag, call(M, F, A, undefined)} end).

%% Makes a call that fails, waits `WaitMs', and returns the outcome and what is in the mailbox
%% by then (a late reply would be there).
call_then_mailbox(Server, Request, Timeout, WaitMs) ->
    Outcome = call(partisan_gen_server, call, [Server, Request, Timeout], undefined),
    timer:sleep(WaitMs),
    {Outcome, element(2, process_info(self(), messages))}.

%% Waits until the registered server `Name' of this node is busy in a call (its mailbox taken).
await_call_inside(Name, Timeout) ->
    partisan_ct:wait_until(fun() ->
                                   case whereis(Name) of
                                       undefined -> false;
                                       Pid -> element(2, process_info(Pid, current_function)) =:= {timer, sleep, 1}
                                   end
                           end, Timeout).

report(To, Msg) -> To ! Msg.

%% -- agents: long-lived processes on peers ---------------------------------------

%% Spawns (on the calling node) a process that runs funs sent with `in/2' and passes every other
%% message to `To' as `{agent, Self, Msg}'. Monitors, node watches and calls made in `in/2' are
%% the agent's own, so their messages come back to the test process.
agent(To) ->
    spawn(fun() -> agent_loop(To) end).

agent_loop(To) ->
    receive
        {'$agent_run', Fun, From, Ref} -> From ! {Ref, catch Fun()};
        Msg -> To ! {agent, self(), Msg}
    end,
    agent_loop(To).

%% Runs `Fun' inside `Agent' (on its node) and returns its value (or `{'EXIT', _}').
in(Agent, Fun) ->
    Ref = make_ref(),
    Agent ! {'$agent_run', Fun, self(), Ref},
    receive {Ref, Result} -> Result after ?TIMEOUT -> ct:fail({agent_timeout, Agent}) end.

%% The next message the agent passed on.
agent_msg(Agent) -> agent_msg(Agent, ?TIMEOUT).
agent_msg(Agent, Timeout) ->
    receive {agent, Agent, Msg} -> Msg after Timeout -> ct:fail({no_agent_message, Agent}) end.

%% Asserts that the agent passes on nothing within `Ms'.
no_agent_msg(Agent, Ms) ->
    receive {agent, Agent, Msg} -> ct:fail({unexpected, Msg}) after Ms -> ok end.
