%% partisan_gen_statem, partisan_gen_event, partisan_gen_supervisor, partisan_sys and
%% partisan_proc_lib on servers of another node (OTP's own behaviours, unchanged), on the full
%% mesh and on HyParView: state and event timeouts, handlers added, called and supervised from
%% another node, a supervisor restarting a child that a third node keeps calling, sys on a
%% remote server, remote spawns. A module written for Distributed Erlang and compiled with
%% partisan_transform runs unchanged across two nodes.
-module(partisan_behaviours_SUITE).

-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, init_per_group/2, end_per_group/2, init_per_testcase/2,
         end_per_testcase/2]).
-export([statem_calls_and_timeouts/1, event_manager/1, supervised_handler/1,
         supervisor_restarts_child/1, sys_on_remote_server/1, proc_lib_spawns/1,
         transformed_module/1]).

-import(partisan_otp_ct, [ab/1, rpc/4, wait/1, in/2, agent_msg/1]).

all() -> [{group, full_mesh}, {group, hyparview}].

groups() ->
    Tests = [statem_calls_and_timeouts, event_manager, supervised_handler,
             supervisor_restarts_child, sys_on_remote_server, proc_lib_spawns,
             transformed_module],
    partisan_otp_ct:groups(Tests).

init_per_group(Group, Config) -> partisan_otp_ct:start_group(Group, "beh") ++ Config.
end_per_group(_, Config) -> partisan_otp_ct:stop_group(Config).

init_per_testcase(_, Config) ->
    partisan_otp_ct:with_pair(Config).

end_per_testcase(_, Config) ->
    partisan_otp_ct:no_leaks(Config).

%% -- tests ------------------------------------------------------------------------

statem_calls_and_timeouts(Config) ->
    {A, B} = ab(Config),
    {ok, Door} = rpc(B, partisan_otp_test_statem, start, [door, 300]),
    Call = fun(Req) -> rpc(A, partisan_gen_statem, call, [{door, B}, Req, 5000]) end,
    ?assertEqual(locked, Call(state)),
    Watcher = rpc(A, partisan_ct, forwarder, [self()]),
    ok = rpc(A, partisan_gen_statem, cast, [{door, B}, {watch, Watcher}]),
    %% A cast and a later call from another process carry no order: wait for the cast.
    wait(fun() -> maps:get(watcher, element(2, rpc(A, partisan_sys, get_state, [{door, B}]))) =:= Watcher end),
    ?assertEqual(opened, Call(unlock)),
    ?assertEqual(open, Call(state)),
    %% The state timeout locks the door again and tells the watcher on the other node.
    ?assertEqual({ok, locked_again}, partisan_ct:recv(Watcher, 10000)),
    ?assertEqual(locked, Call(state)),
    %% An event timeout fires when no event follows.
    ?assertEqual(ok, Call({idle_after, 100})),
    ?assertEqual({ok, idle}, partisan_ct:recv(Watcher, 10000)),
    ?assertEqual(1, Call(idle_count)),
    %% Requests, a missing state machine, stop from another node.
    ?assertEqual({reply, locked}, rpc(A, erlang, apply, [fun() ->
        R = partisan_gen_statem:send_request({door, B}, state),
        partisan_gen_statem:receive_response(R, 5000) end, []])),
    ?assertMatch({'EXIT', {noproc, {partisan_gen_statem, call, [{nodoor, B}, state, {clean_timeout, 1000}]}}},
                 rpc(A, erlang, apply, [fun() -> catch partisan_gen_statem:call({nodoor, B}, state, {clean_timeout, 1000}) end, []])),
    ok = rpc(A, partisan_gen_statem, stop, [{door, B}]),
    ?assertNot(rpc(B, erlang, is_process_alive, [Door])).

event_manager(Config) ->
    {A, B} = ab(Config),
    {ok, Mgr} = rpc(B, partisan_gen_event, start, [{local, events}]),
    M = {events, B},
    Ev = fun(F, Args) -> rpc(A, partisan_gen_event, F, [M | Args]) end,
    ok = Ev(add_handler, [partisan_otp_test_handler, a]),
    ok = Ev(add_handler, [{partisan_otp_test_handler, 2}, b]),
    ok = Ev(notify, [one]),
    ok = Ev(sync_notify, [two]),
    ?assertEqual([one, two], Ev(call, [partisan_otp_test_handler, seen])),
    ?assertEqual(b, Ev(call, [{partisan_otp_test_handler, 2}, tag, 5000])),
    ?assertEqual(lists:sort([partisan_otp_test_handler, {partisan_otp_test_handler, 2}]),
                 lists:sort(Ev(which_handlers, []))),
    ok = Ev(swap_handler, [{{partisan_otp_test_handler, 2}, x}, {{partisan_otp_test_handler, 3}, c}]),
    %% The new handler starts with its argument and the old one's terminate/2 result.
    ?assertEqual({c, ok}, Ev(call, [{partisan_otp_test_handler, 3}, tag])),
    ok = Ev(delete_handler, [{partisan_otp_test_handler, 3}, x]),
    ?assertEqual({error, bad_module}, Ev(call, [{partisan_otp_test_handler, 3}, tag])),
    ?assertEqual({reply, [one, two]}, rpc(A, erlang, apply, [fun() ->
        R = partisan_gen_event:send_request(M, partisan_otp_test_handler, seen),
        partisan_gen_event:receive_response(R, 5000) end, []])),
    ?assertEqual({'EXIT', noproc}, rpc(A, erlang, apply, [fun() -> catch partisan_gen_event:which_handlers({nomgr, B}) end, []])),
    ok = rpc(A, partisan_gen_event, stop, [M]),
    ?assertNot(rpc(B, erlang, is_process_alive, [Mgr])).

supervised_handler(Config) ->
    {A, B} = ab(Config),
    {ok, _} = rpc(B, partisan_gen_event, start, [{local, sup_events}]),
    M = {sup_events, B},
    try
        Owner = rpc(A, partisan_otp_ct, agent, [self()]),
        ok = in(Owner, fun() -> partisan_gen_event:add_sup_handler(M, partisan_otp_test_handler, s) end),
        %% Removing the handler tells its supervisor, on its own node.
        ok = rpc(A, partisan_gen_event, delete_handler, [M, partisan_otp_test_handler, bye]),
        ?assertEqual({gen_event_EXIT, partisan_otp_test_handler, normal}, agent_msg(Owner)),
        %% The supervisor's exit removes the handler, as a link would.
        ok = in(Owner, fun() -> partisan_gen_event:add_sup_handler(M, partisan_otp_test_handler, t) end),
        ?assertEqual([partisan_otp_test_handler], rpc(A, partisan_gen_event, which_handlers, [M])),
        rpc(A, erlang, exit, [Owner, kill]),
        wait(fun() -> rpc(A, partisan_gen_event, which_handlers, [M]) =:= [] end)
    after
        rpc(B, gen_event, stop, [sup_events])
    end.

supervisor_restarts_child(Config) ->
    [A, B, C | _] = order(Config),
    {ok, _, Keeper} = rpc(B, partisan_otp_test_sup, start, [sup]),
    try
        Sup = {sup, B},
        Spec = #{id => kv_child, start => {partisan_otp_test_server, start_link, [kv_child]}},
        {ok, Child} = rpc(A, partisan_gen_supervisor, start_child, [Sup, Spec]),
        ?assertEqual(B, node(Child)),
        ?assertEqual({ok, ok}, call(C, {kv_child, B}, {put, x, 1})),
        %% The child dies; its supervisor restarts it; the client on the third node gets through
        %% to the new one (a fresh state).
        rpc(B, erlang, exit, [Child, kill]),
        wait(fun() -> call(C, {kv_child, B}, {get, x}) =:= {ok, undefined} end),
        [{kv_child, New, worker, _}] = rpc(A, partisan_gen_supervisor, which_children, [Sup]),
        ?assertNotEqual(Child, New),
        ?assertMatch([{specs, 1}, {active, 1} | _], rpc(A, partisan_gen_supervisor, count_children, [Sup])),
        ?assertMatch({ok, #{id := kv_child}}, rpc(A, partisan_gen_supervisor, get_childspec, [Sup, kv_child])),
        ok = rpc(A, partisan_gen_supervisor, terminate_child, [Sup, kv_child]),
        ?assertMatch({exit, {noproc, _}}, call(C, {kv_child, B}, {get, x})),
        {ok, _} = rpc(A, partisan_gen_supervisor, restart_child, [Sup, kv_child]),
        ?assertEqual({ok, undefined}, call(C, {kv_child, B}, {get, x})),
        ok = rpc(A, partisan_gen_supervisor, terminate_child, [Sup, kv_child]),
        ok = rpc(A, partisan_gen_supervisor, delete_child, [Sup, kv_child]),
        ?assertEqual([], rpc(A, partisan_gen_supervisor, which_children, [Sup])),
        ?assertEqual(partisan_otp_test_sup, rpc(A, partisan_gen_supervisor, get_callback_module, [Sup]))
    after
        rpc(B, erlang, exit, [Keeper, kill])
    end.

sys_on_remote_server(Config) ->
    {A, B} = ab(Config),
    {ok, _} = rpc(B, partisan_otp_test_server, start, [sys_kv]),
    try
        S = {sys_kv, B},
        ?assertEqual({ok, ok}, call(A, S, {put, a, 1})),
        ?assertEqual(#{a => 1}, rpc(A, partisan_sys, get_state, [S])),
        ?assertEqual(#{a => 2}, rpc(A, partisan_sys, replace_state, [S, fun(St) -> St#{a => 2} end])),
        ?assertEqual({ok, 2}, call(A, S, {get, a})),
        ok = rpc(A, partisan_sys, suspend, [S]),
        ?assertMatch({exit, {timeout, _}}, call(A, S, {get, a}, 200)),
        ok = rpc(A, partisan_sys, resume, [S]),
        ?assertEqual({ok, 2}, call(A, S, {get, a})),
        ?assertMatch({status, _, {module, gen_server}, _}, rpc(A, partisan_sys, get_status, [S, 5000])),
        ?assertMatch({'EXIT', {noproc, _}}, rpc(A, erlang, apply, [fun() -> catch partisan_sys:get_state({nobody, B}) end, []]))
    after
        rpc(B, gen_server, stop, [sys_kv])
    end.

proc_lib_spawns(Config) ->
    {A, B} = ab(Config),
    Self = self(),
    Pid = rpc(A, partisan_proc_lib, spawn, [B, fun() -> Self ! {spawned, node(), proc_lib:initial_call(self())} end]),
    ?assertEqual(B, node(Pid)),
    ?assertMatch({B, {?MODULE, _, _}}, receive {spawned, N, Init} -> {N, Init} after 10000 -> timeout end),
    ?assertMatch({'EXIT', {notsup, _}}, rpc(A, erlang, apply, [fun() -> catch partisan_proc_lib:spawn_link(B, fun() -> ok end) end, []])),
    Watcher = rpc(A, partisan_otp_ct, agent, [self()]),
    {P2, R2} = in(Watcher, fun() -> partisan_proc_lib:spawn_opt(B, erlang, exit, [bye], [monitor]) end),
    ?assertEqual({'DOWN', R2, process, P2, bye}, agent_msg(Watcher)),
    {ok, Server} = rpc(B, partisan_otp_test_server, start, [plib]),
    ok = rpc(A, partisan_proc_lib, stop, [{plib, B}]),
    ?assertNot(rpc(B, erlang, is_process_alive, [Server])),
    rpc(A, erlang, exit, [Watcher, kill]).

%% partisan_transform_example is written for Distributed Erlang and compiled with the transform.
transformed_module(Config) ->
    {A, B} = ab(Config),
    [{ok, _} = rpc(N, partisan_transform_example, start, []) || N <- [A, B]],
    try
        T = fun(F, Args) -> rpc(A, partisan_transform_example, F, Args) end,
        ?assertEqual({pong, B}, T(ping, [B])),
        {B, Ref} = T(whoami, [B]),
        ?assertEqual(B, partisan_remote_ref:node(Ref)),
        ?assertEqual({told, B, hi}, T(tell, [B, hi])),
        ?assertMatch({ok, [_, _]}, T(broadcast, [[A, B], x])),
        ?assertEqual({relayed, B, {pong, A}}, T(relay, [B, A, x])),
        ?assertEqual({down, normal}, T(watch_stop, [B]))
    after
        [catch rpc(N, partisan_transform_example, stop, []) || N <- [A, B]]
    end.

%% -- helpers --------------------------------------------------------------------------


%% A, B (not neighbours when possible) and the others.
order(Config) ->
    {A, B} = ab(Config),
    [A, B | partisan_otp_ct:nodes(Config) -- [A, B]].

call(Node, Server, Req) -> call(Node, Server, Req, 5000).
call(Node, Server, Req, Timeout) ->
    rpc(Node, partisan_otp_ct, call, [partisan_gen_server, call, [Server, Req, Timeout], x]).
