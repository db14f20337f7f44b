%% Monitors and the process functions of `partisan' across nodes that share no Distributed
%% Erlang connection, on the full mesh and on HyParView (watcher and target are not neighbours
%% when possible): the real exit reason, noproc, noconnection on kill -9 and on a partition,
%% demonitor with flush and info, node monitors, an owner that exits, a restarted node; spawn,
%% spawn_monitor, exit, is_process_alive, process_info, whereis, send_after, node_spec,
%% kill_connections. After every test no monitor, watch or call is left on any node.
-module(partisan_monitor_SUITE).

-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, init_per_group/2, end_per_group/2, init_per_testcase/2,
         end_per_testcase/2]).
-export([exit_reason/1, noproc/1, by_name_and_remote_ref/1, killed_node/1, partitioned_node/1,
         restarted_node/1, demonitor_flush_and_info/1, owner_exits/1, node_monitors/1,
         spawn_and_spawn_monitor/1, process_functions/1, send_after_and_cancel/1,
         node_spec_and_kill_connections/1]).
%% Run on peers.
-export([sleeper/0, sleeper_named/1, die_with/1]).

-import(partisan_otp_ct, [rpc/4, wait/1, in/2, agent_msg/1, agent_msg/2]).

all() -> [{group, full_mesh}, {group, hyparview}].

groups() ->
    Tests = [exit_reason, noproc, by_name_and_remote_ref, killed_node, partitioned_node,
             restarted_node, demonitor_flush_and_info, owner_exits, node_monitors,
             spawn_and_spawn_monitor, process_functions, send_after_and_cancel,
             node_spec_and_kill_connections],
    partisan_otp_ct:groups(Tests).

init_per_group(Group, Config) -> partisan_otp_ct:start_group(Group, "mon") ++ Config.
end_per_group(_, Config) -> partisan_otp_ct:stop_group(Config).

init_per_testcase(_, Config0) ->
    Config = partisan_otp_ct:with_pair(Config0),
    Agent = rpc(proplists:get_value(a, Config), partisan_otp_ct, agent, [self()]),
    [{agent, Agent} | Config].

end_per_testcase(_, Config) ->
    Agent = proplists:get_value(agent, Config),
    rpc(node(Agent), erlang, exit, [Agent, kill]),
    partisan_otp_ct:no_leaks(Config).

%% -- tests ------------------------------------------------------------------------

exit_reason(Config) ->
    {B, Agent} = {b(Config), agent(Config)},
    Target = rpc(B, erlang, spawn, [?MODULE, sleeper, []]),
    Ref = in(Agent, fun() -> partisan:monitor(process, Target) end),
    ?assert(is_reference(Ref)),
    %% partisan:monitor/2 returns once the target's node has set the monitor.
    established(B, 1),
    rpc(B, erlang, exit, [Target, {shutdown, because}]),
    ?assertEqual({'DOWN', Ref, process, Target, {shutdown, because}}, agent_msg(Agent)),
    %% A process's last message arrives before its DOWN (on a link; messages relayed through
    %% the overlay carry no order).
    Last = rpc(B, erlang, spawn, [?MODULE, die_with, [Agent]]),
    Ref2 = in(Agent, fun() -> partisan:monitor(process, Last, [{channel, data}]) end),
    established(B, 1),
    Last ! go,
    Got = [agent_msg(Agent), agent_msg(Agent)],
    Expected = [last_words, {'DOWN', Ref2, process, Last, done}],
    case proplists:get_value(overlay, Config) of
        full_mesh -> ?assertEqual(Expected, Got);
        hyparview -> ?assertEqual(lists:sort(Expected), lists:sort(Got))
    end.

noproc(Config) ->
    {B, Agent} = {b(Config), agent(Config)},
    Dead = rpc(B, erlang, spawn, [erlang, is_atom, [x]]),
    wait(fun() -> not rpc(B, erlang, is_process_alive, [Dead]) end),
    Ref = in(Agent, fun() -> partisan:monitor(process, Dead) end),
    ?assertEqual({'DOWN', Ref, process, Dead, noproc}, agent_msg(Agent)),
    Ref2 = in(Agent, fun() -> partisan:monitor(process, {nobody_here, B}) end),
    ?assertEqual({'DOWN', Ref2, process, {nobody_here, B}, noproc}, agent_msg(Agent)).

by_name_and_remote_ref(Config) ->
    {B, Agent} = {b(Config), agent(Config)},
    Target = rpc(B, ?MODULE, sleeper_named, [mon_target]),
    Ref = in(Agent, fun() -> partisan:monitor(process, {mon_target, B}) end),
    NameRef = rpc(B, partisan_remote_ref, from_term, [mon_target]),
    RRef = in(Agent, fun() -> partisan:monitor(process, NameRef) end),
    %% A monitor through a remote reference answers with a remote reference (as Partisan v5).
    ?assert(rpc(B, partisan_remote_ref, is_reference, [RRef])),
    established(B, 2),
    rpc(B, erlang, exit, [Target, kill]),
    Downs = lists:sort([agent_msg(Agent), agent_msg(Agent)]),
    ?assertEqual(lists:sort([{'DOWN', Ref, process, {mon_target, B}, killed},
                             {'DOWN', RRef, process, NameRef, killed}]), Downs).

killed_node(Config) ->
    Agent = agent(Config),
    {_, Victim} = partisan_otp_ct:start_victim(mon_victim, Config),
    Target = rpc(Victim, erlang, spawn, [?MODULE, sleeper, []]),
    Ref = in(Agent, fun() -> partisan:monitor(process, Target) end),
    true = in(Agent, fun() -> partisan:monitor_node(Victim, true) end),
    established(Victim, 1),
    ok = partisan_ct:kill_node(Victim),
    Got = lists:sort([agent_msg(Agent), agent_msg(Agent)]),
    ?assertEqual(lists:sort([{'DOWN', Ref, process, Target, noconnection}, {nodedown, Victim}]), Got).

partitioned_node(Config) ->
    Agent = agent(Config),
    {_, Victim} = Peer = partisan_otp_ct:start_victim(mon_cut, Config),
    try
        Target = rpc(Victim, erlang, spawn, [?MODULE, sleeper, []]),
        Ref = in(Agent, fun() -> partisan:monitor(process, Target) end),
        partisan_otp_ct:partition(Victim, partisan_otp_ct:nodes(Config)),
        ?assertEqual({'DOWN', Ref, process, Target, noconnection}, agent_msg(Agent)),
        %% The victim forgot the monitor too (it saw the watcher's node go).
        wait(fun() -> maps:get(in, rpc(Victim, partisan_monitor, info, [])) =:= 0 end)
    after
        partisan_ct:stop_cluster([Peer])
    end.

restarted_node(Config) ->
    Agent = agent(Config),
    {_, Victim} = partisan_otp_ct:start_victim(mon_again, Config),
    Target = rpc(Victim, erlang, spawn, [?MODULE, sleeper, []]),
    Ref = in(Agent, fun() -> partisan:monitor(process, Target) end),
    ok = partisan_ct:kill_node(Victim),
    Again = partisan_otp_ct:start_victim(mon_again, Config),
    try
        ?assertEqual({'DOWN', Ref, process, Target, noconnection}, agent_msg(Agent))
    after
        partisan_ct:stop_cluster([Again])
    end.

demonitor_flush_and_info(Config) ->
    {B, Agent} = {b(Config), agent(Config)},
    T1 = rpc(B, erlang, spawn, [?MODULE, sleeper, []]),
    R1 = in(Agent, fun() -> partisan:monitor(process, T1) end),
    ?assertEqual(true, in(Agent, fun() -> partisan:demonitor(R1, [info]) end)),
    ?assertEqual(false, in(Agent, fun() -> partisan:demonitor(R1, [info]) end)),
    established(B, 0),
    rpc(B, erlang, exit, [T1, kill]),
    partisan_otp_ct:no_agent_msg(Agent, 300),
    %% A DOWN that already arrived is removed by flush.
    T2 = rpc(B, erlang, spawn, [?MODULE, sleeper, []]),
    Flushed = in(Agent, fun() ->
                                R = partisan:monitor(process, T2),
                                partisan:exit(T2, kill),
                                partisan_ct:wait_until(fun() -> has_down(R) end, 10000),
                                {partisan:demonitor(R, [flush, info]), element(2, process_info(self(), messages))}
                        end),
    ?assertEqual({false, []}, Flushed),
    ?assertEqual(true, in(Agent, fun() -> partisan:demonitor(make_ref()) end)).

has_down(Ref) ->
    lists:keymember(Ref, 2, element(2, process_info(self(), messages))).

owner_exits(Config) ->
    {A, B} = {a(Config), b(Config)},
    Owner = rpc(A, partisan_otp_ct, agent, [self()]),
    Targets = [rpc(B, erlang, spawn, [?MODULE, sleeper, []]) || _ <- lists:seq(1, 5)],
    [in(Owner, fun() -> partisan:monitor(process, T) end) || T <- Targets],
    true = in(Owner, fun() -> partisan:monitor_node(B, true) end),
    wait(fun() -> maps:get(in, rpc(B, partisan_monitor, info, [])) =:= 5 end),
    rpc(A, erlang, exit, [Owner, kill]),
    %% end_per_testcase checks that both sides forgot everything.
    [rpc(B, erlang, exit, [T, kill]) || T <- Targets].

node_monitors(Config) ->
    {B, Agent} = {b(Config), agent(Config)},
    [true = in(Agent, fun() -> partisan:monitor_node(B, true) end) || _ <- [1, 2]],
    true = in(Agent, fun() -> partisan:monitor_node(B, false) end),
    ?assertEqual(1, maps:get(node_watches, rpc(node(Agent), partisan_monitor, info, []))),
    true = in(Agent, fun() -> partisan:monitor_node(B, false) end),
    %% A node nobody can reach: `nodedown' at once on the full mesh, after the probe elsewhere.
    true = in(Agent, fun() -> partisan:monitor_node('nobody@127.0.0.1', true) end),
    ?assertEqual({nodedown, 'nobody@127.0.0.1'}, agent_msg(Agent)),
    ?assertEqual(true, in(Agent, fun() -> partisan:monitor_node(partisan:node(), true) end)).

spawn_and_spawn_monitor(Config) ->
    {B, Agent} = {b(Config), agent(Config)},
    Pid = in(Agent, fun() -> partisan:spawn(B, ?MODULE, sleeper, []) end),
    ?assertEqual(B, node(Pid)),
    ?assert(rpc(B, erlang, is_process_alive, [Pid])),
    rpc(B, erlang, exit, [Pid, kill]),
    %% An instant exit keeps its reason: the process starts only once the monitor is set.
    {P2, R2} = in(Agent, fun() -> partisan:spawn_monitor(B, erlang, exit, [boom]) end),
    ?assertEqual({'DOWN', R2, process, P2, boom}, agent_msg(Agent)),
    Self = self(),
    {P3, R3} = in(Agent, fun() -> partisan:spawn_monitor(B, fun() -> Self ! {ran_on, node()} end) end),
    ?assertEqual({ran_on, B}, receive {ran_on, _} = M -> M after 10000 -> timeout end),
    ?assertEqual({'DOWN', R3, process, P3, normal}, agent_msg(Agent)),
    %% A node that cannot be reached: a pid that is already dead, and noconnection.
    {_, R4} = in(Agent, fun() -> partisan:spawn_monitor('nobody@127.0.0.1', ?MODULE, sleeper, []) end),
    ?assertMatch({'DOWN', R4, process, _, noconnection}, agent_msg(Agent)).

process_functions(Config) ->
    {A, B} = {a(Config), b(Config)},
    Target = rpc(B, ?MODULE, sleeper_named, [mon_info]),
    ?assert(rpc(A, partisan, is_process_alive, [Target])),
    ?assertEqual({registered_name, mon_info}, rpc(A, partisan, process_info, [Target, registered_name])),
    ?assertMatch([_ | _], rpc(A, partisan, process_info, [Target])),
    ?assertEqual(Target, rpc(A, partisan, whereis, [{mon_info, B}])),
    NameRef = rpc(B, partisan_remote_ref, from_term, [mon_info]),
    PidRef = rpc(A, partisan, whereis, [NameRef]),
    ?assert(rpc(B, partisan_remote_ref, is_local_pid, [PidRef, Target])),
    ?assertEqual(undefined, rpc(A, partisan, whereis, [{nobody_here, B}])),
    true = rpc(A, partisan, exit, [Target, kill]),
    wait(fun() -> not rpc(A, partisan, is_process_alive, [Target]) end),
    ?assertEqual(undefined, rpc(A, partisan, process_info, [Target])),
    ?assertEqual(false, rpc(A, partisan, is_process_alive, [Target])).

send_after_and_cancel(Config) ->
    {A, B} = {a(Config), b(Config)},
    Fwd = rpc(B, partisan_ct, forwarder, [self()]),
    _ = rpc(A, partisan, send_after, [50, Fwd, later, [{channel, data}]]),
    ?assertEqual({ok, later}, partisan_ct:recv(Fwd, 10000)),
    TRef = rpc(A, partisan, send_after, [300, Fwd, never]),
    ?assert(is_integer(rpc(A, partisan, cancel_timer, [TRef]))),
    ?assertEqual({error, timeout}, partisan_ct:recv(Fwd, 600)).

node_spec_and_kill_connections(Config) ->
    {A, B} = {a(Config), b(Config)},
    Spec = rpc(B, partisan, node_spec, []),
    ?assertEqual({ok, Spec}, rpc(A, partisan, node_spec, [B])),
    ?assertEqual({ok, Spec}, rpc(A, partisan, node_spec, [atom_to_binary(B), #{rpc_timeout => 5000}])),
    ?assertMatch({error, _}, rpc(A, partisan, node_spec, ['nobody@127.0.0.1', #{rpc_timeout => 2000}])),
    case proplists:get_value(overlay, Config) of
        full_mesh ->
            Accepted = fun() -> maps:get(connections_accepted, rpc(B, partisan, stats, [])) end,
            Before = Accepted(),
            ok = rpc(A, partisan, kill_connections, [[B]]),
            %% The links are made again: new connections, and messages flow.
            wait(fun() -> Accepted() > Before andalso rpc(A, partisan, is_fully_connected, [B]) end),
            ?assertEqual(ok, partisan_ct:check_delivery(A, B, data, 10000));
        hyparview ->
            ok
    end.

%% -- run on peers ------------------------------------------------------------------

sleeper() -> receive never -> ok end.

sleeper_named(Name) ->
    Pid = spawn(fun sleeper/0),
    true = register(Name, Pid),
    Pid.

%% Waits for `go', sends its last words to `To' over Partisan, and exits.
die_with(To) ->
    receive go -> ok end,
    ok = partisan:forward_message(To, last_words, #{channel => data, transitive => true}),
    exit(done).

%% `Node' holds exactly `N' monitors for remote watchers (eventually: a demonitor travels on).
established(Node, N) ->
    wait(fun() -> maps:get(in, rpc(Node, partisan_monitor, info, [])) =:= N end).

a(Config) -> proplists:get_value(a, Config).
b(Config) -> proplists:get_value(b, Config).
agent(Config) -> proplists:get_value(agent, Config).
