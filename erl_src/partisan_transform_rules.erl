%% @doc The rewrite table of `partisan_transform': which calls are redirected to Partisan, and
%% where `self()' must stay a plain pid.
%%
%% Three kinds of rewrite, each named by a skip key (see {@link skip_key/1}):
%% <ul>
%% <li>the send operator `Dest ! Msg' (key `` '!' ``) and `erlang:send/2,3' (key `send') become
%%     `partisan_transform:send/2,3';</li>
%% <li>the process and node BIFs Partisan re-exports (`self/0', `node/0,1', `nodes/0',
%%     `monitor/2,3', ...) become the `partisan' function of the same name and arity (key: the
%%     function's name, or `{Name, Arity}');</li>
%% <li>calls to the OTP modules Partisan mirrors (`gen_server', `gen_statem', `gen_event',
%%     `supervisor', `proc_lib', `sys', `erpc', and `rpc:call/4,5') go to the `partisan_*'
%%     module (key: the module's name, or `{Module, Function, Arity}'). Only the functions
%%     Partisan v5's module exports and OTP's module exports too are redirected, minus the
%%     internals OTP itself calls back (`init_it', `system_continue', `wake_hib', ...).</li>
%% </ul>
%% @end
-module(partisan_transform_rules).

-export([op_send/0, erlang_call/2, remote_call/3, skip_key/1, known_skip/1, keeps_pid/3]).

-type target() :: {module(), atom()}.
-type skip() :: atom() | {atom(), arity()} | {module(), atom(), arity()}.
-export_type([target/0, skip/0]).

%% erlang:F/A => partisan module (all keep the name and arity)
-define(BIFS, #{{self, 0} => partisan, {node, 0} => partisan, {node, 1} => partisan,
                {nodes, 0} => partisan, {is_process_alive, 1} => partisan,
                {monitor, 2} => partisan, {monitor, 3} => partisan,
                {demonitor, 1} => partisan, {demonitor, 2} => partisan,
                {monitor_node, 2} => partisan, {monitor_node, 3} => partisan,
                {exit, 2} => partisan, {spawn, 2} => partisan, {spawn, 4} => partisan,
                {spawn_monitor, 2} => partisan, {spawn_monitor, 4} => partisan,
                {send_after, 3} => partisan, {send_after, 4} => partisan,
                {cancel_timer, 1} => partisan, {cancel_timer, 2} => partisan,
                {process_info, 1} => partisan, {process_info, 2} => partisan,
                {whereis, 1} => partisan, {is_pid, 1} => partisan,
                {is_reference, 1} => partisan, {make_ref, 0} => partisan,
                {send, 2} => partisan_transform, {send, 3} => partisan_transform}).

-define(MODULES, #{gen_server => partisan_gen_server, gen_statem => partisan_gen_statem,
                   gen_event => partisan_gen_event, supervisor => partisan_gen_supervisor,
                   proc_lib => partisan_proc_lib, sys => partisan_sys, rpc => partisan_rpc,
                   erpc => partisan_erpc}).

%% @doc The call `Dest ! Msg' becomes: `partisan_transform:send(Dest, Msg)'.
-spec op_send() -> target().
op_send() -> {partisan_transform, send}.

%% @doc Where a call of `erlang:F/A' goes, or `none' when it stays as it is.
-spec erlang_call(atom(), arity()) -> target() | none.
erlang_call(F, A) ->
    case ?BIFS of
        #{{F, A} := Mod} -> {Mod, F};
        #{} -> none
    end.

%% @doc Where a call of `M:F/A' goes, or `none' when it stays as it is.
-spec remote_call(module(), atom(), arity()) -> target() | none.
remote_call(erlang, F, A) ->
    erlang_call(F, A);
remote_call(M, F, A) ->
    case ?MODULES of
        #{M := PM} ->
            case lists:member({F, A}, functions(M)) of
                true -> {PM, F};
                false -> none
            end;
        #{} ->
            none
    end.

%% @doc The skip keys that disable the rewrite of `erlang:F/A' or `M:F/A' (any matches).
-spec skip_key({module(), atom(), arity()} | '!') -> [skip()].
skip_key('!') -> ['!'];
skip_key({erlang, F, A}) -> [F, {F, A}, {erlang, F, A}];
skip_key({M, F, A}) -> [M, {M, F, A}].

%% @doc Whether `Key' names a rewrite (so a skip list with it is well-formed).
-spec known_skip(term()) -> boolean().
known_skip('!') -> true;
known_skip(Key) when is_atom(Key) ->
    is_map_key(Key, ?MODULES) orelse
        lists:any(fun({F, _}) -> F =:= Key end, maps:keys(?BIFS));
known_skip({F, A}) when is_atom(F), is_integer(A) ->
    is_map_key({F, A}, ?BIFS);
known_skip({M, F, A}) when is_atom(M), is_atom(F), is_integer(A) ->
    remote_call(M, F, A) =/= none;
known_skip(_) ->
    false.

%% @doc Whether `self()' given directly as argument `N' (1-based) to `M:F/A' must stay a plain
%% pid. `Rewritten' says whether the call itself is redirected to Partisan. A pid stays where
%% only a local pid is accepted or meant: the destination of a send or timer, any argument of
%% an `erlang' BIF that is not redirected (`link/1', `register/2', `process_flag/3',
%% `erlang:start_timer/3', ...), and the pid arguments of a few library functions that need a
%% local process (`ets:give_away/3', `gen_tcp:controlling_process/2', `timer:send_after/3',
%% `pg:join/2,3', ...). Everywhere else `self()' becomes `partisan:self()'.
-spec keeps_pid({module(), atom(), arity()} | '!', pos_integer(), boolean()) -> boolean().
keeps_pid('!', 1, _) -> true;
keeps_pid({erlang, send, _}, 1, _) -> true;
keeps_pid({erlang, send_after, _}, 2, _) -> true;
keeps_pid({erlang, _, _}, _, Rewritten) -> not Rewritten;
keeps_pid({ets, give_away, 3}, 2, _) -> true;
keeps_pid({M, controlling_process, 2}, 2, _) ->
    lists:member(M, [gen_tcp, gen_udp, gen_sctp, ssl, socket]);
keeps_pid({timer, F, 3}, 2, _) -> lists:member(F, [send_after, send_interval, exit_after]);
keeps_pid({timer, kill_after, 2}, 2, _) -> true;
keeps_pid({pg, F, A}, N, _) -> (F =:= join orelse F =:= leave) andalso N =:= A;
keeps_pid(_, _, _) -> false.

%% -- internal ---------------------------------------------------------------

%% The functions of each module that are redirected: exported by Partisan v5's module and by
%% OTP 25's, except internals that OTP calls back by MFA (init_it, system_*, wake_hib, ...).
functions(gen_server) ->
    [{start, 3}, {start, 4}, {start_link, 3}, {start_link, 4}, {start_monitor, 3},
     {start_monitor, 4}, {stop, 1}, {stop, 3}, {call, 2}, {call, 3}, {send_request, 2},
     {wait_response, 2}, {receive_response, 2}, {check_response, 2}, {cast, 2}, {reply, 2},
     {abcast, 2}, {abcast, 3}, {multi_call, 2}, {multi_call, 3}, {multi_call, 4},
     {enter_loop, 3}, {enter_loop, 4}, {enter_loop, 5}];
functions(gen_statem) ->
    [{start, 3}, {start, 4}, {start_link, 3}, {start_link, 4}, {start_monitor, 3},
     {start_monitor, 4}, {stop, 1}, {stop, 3}, {cast, 2}, {call, 2}, {call, 3},
     {send_request, 2}, {wait_response, 1}, {wait_response, 2}, {receive_response, 1},
     {receive_response, 2}, {check_response, 2}, {enter_loop, 4}, {enter_loop, 5},
     {enter_loop, 6}, {reply, 1}, {reply, 2}];
functions(gen_event) ->
    [{start, 0}, {start, 1}, {start, 2}, {start_link, 0}, {start_link, 1}, {start_link, 2},
     {start_monitor, 0}, {start_monitor, 1}, {start_monitor, 2}, {stop, 1}, {stop, 3},
     {notify, 2}, {sync_notify, 2}, {add_handler, 3}, {add_sup_handler, 3},
     {delete_handler, 3}, {swap_handler, 3}, {swap_sup_handler, 3}, {which_handlers, 1},
     {call, 3}, {call, 4}, {send_request, 3}, {wait_response, 2}, {receive_response, 2},
     {check_response, 2}];
functions(supervisor) ->
    [{start_link, 2}, {start_link, 3}, {start_child, 2}, {restart_child, 2},
     {delete_child, 2}, {terminate_child, 2}, {which_children, 1}, {count_children, 1},
     {check_childspecs, 1}, {check_childspecs, 2}, {get_childspec, 2},
     {get_callback_module, 1}];
functions(proc_lib) ->
    [{spawn, 1}, {spawn_link, 1}, {spawn, 2}, {spawn_link, 2}, {spawn, 3}, {spawn_link, 3},
     {spawn, 4}, {spawn_link, 4}, {spawn_opt, 2}, {spawn_opt, 3}, {spawn_opt, 4},
     {spawn_opt, 5}, {start, 3}, {start, 4}, {start, 5}, {start_link, 3}, {start_link, 4},
     {start_link, 5}, {start_monitor, 3}, {start_monitor, 4}, {start_monitor, 5},
     {hibernate, 3}, {init_ack, 1}, {init_ack, 2}, {format, 1}, {format, 2}, {format, 3},
     {initial_call, 1}, {translate_initial_call, 1}, {stop, 1}, {stop, 3}];
functions(sys) ->
    [{suspend, 1}, {suspend, 2}, {resume, 1}, {resume, 2}, {get_status, 1},
     {get_status, 2}, {get_state, 1}, {get_state, 2}, {replace_state, 2},
     {replace_state, 3}, {change_code, 4}, {change_code, 5}, {terminate, 3}, {log, 2},
     {log, 3}, {trace, 2}, {trace, 3}, {statistics, 2}, {statistics, 3}, {log_to_file, 2},
     {log_to_file, 3}, {no_debug, 1}, {no_debug, 2}, {install, 2}, {install, 3},
     {remove, 2}, {remove, 3}, {handle_system_msg, 6}, {handle_system_msg, 7},
     {handle_debug, 4}, {print_log, 1}, {get_log, 1}, {get_debug, 3}, {debug_options, 1}];
functions(rpc) ->
    [{call, 4}, {call, 5}];
functions(erpc) ->
    [{call, 2}, {call, 3}, {call, 4}, {call, 5}, {cast, 2}, {cast, 4}, {send_request, 2},
     {send_request, 4}, {receive_response, 1}, {receive_response, 2}, {wait_response, 1},
     {wait_response, 2}, {check_response, 2}, {multicall, 2}, {multicall, 3},
     {multicall, 4}, {multicall, 5}, {multicast, 2}, {multicast, 4}].
