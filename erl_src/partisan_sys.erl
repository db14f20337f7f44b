%% @doc `sys' for processes on any Partisan node, with Partisan v5's API.
%%
%% The functions that take a process (`get_state/1', `suspend/1', `replace_state/2', ...) run
%% OTP's `sys' function on the process's node (see `partisan_gen:server_apply/5'): the
%% process is OTP's own, it receives OTP's own system messages, and the result or exception
%% comes back as if the call were local; `{nodedown, Node}' is raised when the node is lost.
%% Funs (`replace_state/2', `install/2') run on the process's node, so their code must be
%% loaded there. The helpers for writing special processes (`handle_system_msg/6', ...) work on
%% the calling process and are OTP's.
-module(partisan_sys).
-compile({nowarn_deprecated_function, [{sys, get_debug, 3}]}).
-export([suspend/1, suspend/2, resume/1, resume/2, get_status/1, get_status/2, get_state/1,
         get_state/2, replace_state/2, replace_state/3, change_code/4, change_code/5,
         terminate/3, log/2, log/3, trace/2, trace/3, statistics/2, statistics/3,
         log_to_file/2, log_to_file/3, no_debug/1, no_debug/2, install/2, install/3, remove/2,
         remove/3, handle_system_msg/6, handle_system_msg/7, handle_debug/4, print_log/1,
         get_log/1, get_debug/3, debug_options/1, suspend_loop_hib/6]).
-type name() :: partisan_otp:server_ref().

%% @doc Suspends a process (`sys:suspend/1'), here or on another node.
-spec suspend(name()) -> term().
suspend(Name) ->
    partisan_gen:server_apply(Name, sys, suspend, [], infinity).

%% @doc `suspend/1' with a timeout.
-spec suspend(name(), timeout()) -> term().
suspend(Name, Timeout) ->
    partisan_gen:server_apply(Name, sys, suspend, [Timeout], infinity).

%% @doc Resumes a suspended process (`sys:resume/1').
-spec resume(name()) -> term().
resume(Name) ->
    partisan_gen:server_apply(Name, sys, resume, [], infinity).

%% @doc `resume/1' with a timeout.
-spec resume(name(), timeout()) -> term().
resume(Name, Timeout) ->
    partisan_gen:server_apply(Name, sys, resume, [Timeout], infinity).

%% @doc The status of a process (`sys:get_status/1').
-spec get_status(name()) -> term().
get_status(Name) ->
    partisan_gen:server_apply(Name, sys, get_status, [], infinity).

%% @doc `get_status/1' with a timeout.
-spec get_status(name(), timeout()) -> term().
get_status(Name, Timeout) ->
    partisan_gen:server_apply(Name, sys, get_status, [Timeout], infinity).

%% @doc The state of a process (`sys:get_state/1'), here or on another node.
-spec get_state(name()) -> term().
get_state(Name) ->
    partisan_gen:server_apply(Name, sys, get_state, [], infinity).

%% @doc `get_state/1' with a timeout.
-spec get_state(name(), timeout()) -> term().
get_state(Name, Timeout) ->
    partisan_gen:server_apply(Name, sys, get_state, [Timeout], infinity).

%% @doc Replaces the state of a process with `StateFun(State)' (`sys:replace_state/2'); the fun runs on the process's node.
-spec replace_state(name(), term()) -> term().
replace_state(Name, StateFun) ->
    partisan_gen:server_apply(Name, sys, replace_state, [StateFun], infinity).

%% @doc `replace_state/2' with a timeout.
-spec replace_state(name(), term(), timeout()) -> term().
replace_state(Name, StateFun, Timeout) ->
    partisan_gen:server_apply(Name, sys, replace_state, [StateFun, Timeout], infinity).

%% @doc Asks a suspended process to change code (`sys:change_code/4').
-spec change_code(name(), term(), term(), term()) -> term().
change_code(Name, Module, OldVsn, Extra) ->
    partisan_gen:server_apply(Name, sys, change_code, [Module, OldVsn, Extra], infinity).

%% @doc `change_code/4' with a timeout.
-spec change_code(name(), term(), term(), term(), timeout()) -> term().
change_code(Name, Module, OldVsn, Extra, Timeout) ->
    partisan_gen:server_apply(Name, sys, change_code, [Module, OldVsn, Extra, Timeout], infinity).

%% @doc Terminates a process with `Reason' within `Timeout' (`sys:terminate/3').
-spec terminate(name(), term(), timeout()) -> term().
terminate(Name, Reason, Timeout) ->
    partisan_gen:server_apply(Name, sys, terminate, [Reason, Timeout], infinity).

%% @doc Turns event logging on or off, or reads it (`sys:log/2').
-spec log(name(), term()) -> term().
log(Name, Flag) ->
    partisan_gen:server_apply(Name, sys, log, [Flag], infinity).

%% @doc `log/2' with a timeout.
-spec log(name(), term(), timeout()) -> term().
log(Name, Flag, Timeout) ->
    partisan_gen:server_apply(Name, sys, log, [Flag, Timeout], infinity).

%% @doc Prints the process's system events (`sys:trace/2'), on its node's standard output.
-spec trace(name(), term()) -> term().
trace(Name, Flag) ->
    partisan_gen:server_apply(Name, sys, trace, [Flag], infinity).

%% @doc `trace/2' with a timeout.
-spec trace(name(), term(), timeout()) -> term().
trace(Name, Flag, Timeout) ->
    partisan_gen:server_apply(Name, sys, trace, [Flag, Timeout], infinity).

%% @doc Collects or reads statistics (`sys:statistics/2').
-spec statistics(name(), term()) -> term().
statistics(Name, Flag) ->
    partisan_gen:server_apply(Name, sys, statistics, [Flag], infinity).

%% @doc `statistics/2' with a timeout.
-spec statistics(name(), term(), timeout()) -> term().
statistics(Name, Flag, Timeout) ->
    partisan_gen:server_apply(Name, sys, statistics, [Flag, Timeout], infinity).

%% @doc Logs system events to a file on the process's node (`sys:log_to_file/2').
-spec log_to_file(name(), term()) -> term().
log_to_file(Name, Flag) ->
    partisan_gen:server_apply(Name, sys, log_to_file, [Flag], infinity).

%% @doc `log_to_file/2' with a timeout.
-spec log_to_file(name(), term(), timeout()) -> term().
log_to_file(Name, Flag, Timeout) ->
    partisan_gen:server_apply(Name, sys, log_to_file, [Flag, Timeout], infinity).

%% @doc Turns all debugging off (`sys:no_debug/1').
-spec no_debug(name()) -> term().
no_debug(Name) ->
    partisan_gen:server_apply(Name, sys, no_debug, [], infinity).

%% @doc `no_debug/1' with a timeout.
-spec no_debug(name(), timeout()) -> term().
no_debug(Name, Timeout) ->
    partisan_gen:server_apply(Name, sys, no_debug, [Timeout], infinity).

%% @doc Installs a debug function (`sys:install/2'); it runs on the process's node.
-spec install(name(), term()) -> term().
install(Name, FuncSpec) ->
    partisan_gen:server_apply(Name, sys, install, [FuncSpec], infinity).

%% @doc `install/2' with a timeout.
-spec install(name(), term(), timeout()) -> term().
install(Name, FuncSpec, Timeout) ->
    partisan_gen:server_apply(Name, sys, install, [FuncSpec, Timeout], infinity).

%% @doc Removes a debug function (`sys:remove/2').
-spec remove(name(), term()) -> term().
remove(Name, Func) ->
    partisan_gen:server_apply(Name, sys, remove, [Func], infinity).

%% @doc `remove/2' with a timeout.
-spec remove(name(), term(), timeout()) -> term().
remove(Name, Func, Timeout) ->
    partisan_gen:server_apply(Name, sys, remove, [Func, Timeout], infinity).

%% @doc Handles a system message in a special process (`sys:handle_system_msg/6').
-spec handle_system_msg(term(), {pid(), term()}, pid(), module(), [sys:dbg_opt()], term()) -> no_return().
handle_system_msg(Msg, From, Parent, Mod, Debug, Misc) ->
    sys:handle_system_msg(Msg, From, Parent, Mod, Debug, Misc).

%% @doc `handle_system_msg/6' with hibernation.
-spec handle_system_msg(term(), {pid(), term()}, pid(), module(), [sys:dbg_opt()], term(), boolean()) -> no_return().
handle_system_msg(Msg, From, Parent, Mod, Debug, Misc, Hib) ->
    sys:handle_system_msg(Msg, From, Parent, Mod, Debug, Misc, Hib).

%% @doc Records a system event in a special process's debug structure (`sys:handle_debug/4').
-spec handle_debug([sys:dbg_opt()], sys:dbg_fun() | fun(), term(), term()) -> [sys:dbg_opt()].
handle_debug(Debug, FormFunc, State, Event) ->
    sys:handle_debug(Debug, FormFunc, State, Event).

%% @doc Prints the logged events of a debug structure (`sys:print_log/1').
-spec print_log([sys:dbg_opt()]) -> ok.
print_log(Debug) -> sys:print_log(Debug).

%% @doc The logged events of a debug structure (`sys:get_log/1').
-spec get_log([sys:dbg_opt()]) -> [sys:system_event()].
get_log(Debug) -> sys:get_log(Debug).

%% @doc A debug option of a debug structure (`sys:get_debug/3').
-spec get_debug(atom(), [sys:dbg_opt()], term()) -> term().
get_debug(Item, Debug, Default) -> sys:get_debug(Item, Debug, Default).

%% @doc A debug structure from debug options (`sys:debug_options/1').
-spec debug_options([sys:debug_option()]) -> [sys:dbg_opt()].
debug_options(Options) -> sys:debug_options(Options).

%% @private
suspend_loop_hib(SysState, Parent, Mod, Debug, Misc, Hib) ->
    sys:suspend_loop_hib(SysState, Parent, Mod, Debug, Misc, Hib).
