%% @doc `proc_lib' with Partisan v5's API: the node variants spawn on any Partisan node.
%%
%% Everything about the calling process (`start/3', `init_ack/1', `hibernate/3', ...) is OTP's
%% `proc_lib'. `spawn/2,4' and `spawn_opt/3,5' with another node run `proc_lib:spawn*' there and
%% return the new pid; `stop/1,3' stops a process on any node. A link cannot cross nodes without
%% Distributed Erlang: `spawn_link/2,4' and a `link' spawn option to another node raise
%% `notsup' (use `spawn_opt' with `monitor', which sets a Partisan monitor).
-module(partisan_proc_lib).

-export([spawn/1, spawn/2, spawn/3, spawn/4, spawn_link/1, spawn_link/2, spawn_link/3,
         spawn_link/4, spawn_opt/2, spawn_opt/3, spawn_opt/4, spawn_opt/5, start/3, start/4,
         start/5, start_link/3, start_link/4, start_link/5, start_monitor/3, start_monitor/4,
         start_monitor/5, hibernate/3, init_ack/1, init_ack/2, init_p/3, init_p/5, format/1,
         format/2, format/3, report_cb/2, initial_call/1, translate_initial_call/1, stop/1,
         stop/3, wake_up/3]).

-compile({no_auto_import, [spawn/1, spawn/2, spawn/3, spawn/4, spawn_link/1, spawn_link/2,
                           spawn_link/3, spawn_link/4, spawn_opt/2, spawn_opt/3, spawn_opt/4,
                           spawn_opt/5]}).

%% @doc `proc_lib:spawn/1'.
-spec spawn(fun(() -> term())) -> pid().
spawn(Fun) -> proc_lib:spawn(Fun).

%% @doc Spawns `Fun' on `Node' (any Partisan node).
-spec spawn(node(), fun(() -> term())) -> pid().
spawn(Node, Fun) -> on(Node, spawn, [Fun]).

%% @doc `proc_lib:spawn/3'.
-spec spawn(module(), atom(), [term()]) -> pid().
spawn(M, F, A) -> proc_lib:spawn(M, F, A).

%% @doc Spawns `M:F(A)' on `Node' (any Partisan node).
-spec spawn(node(), module(), atom(), [term()]) -> pid().
spawn(Node, M, F, A) -> on(Node, spawn, [M, F, A]).

%% @doc `proc_lib:spawn_link/1'.
-spec spawn_link(fun(() -> term())) -> pid().
spawn_link(Fun) -> proc_lib:spawn_link(Fun).

%% @doc `proc_lib:spawn_link/2' on this node; `notsup' for another node.
-spec spawn_link(node(), fun(() -> term())) -> pid().
spawn_link(Node, Fun) -> local_only(Node), proc_lib:spawn_link(Fun).

%% @doc `proc_lib:spawn_link/3'.
-spec spawn_link(module(), atom(), [term()]) -> pid().
spawn_link(M, F, A) -> proc_lib:spawn_link(M, F, A).

%% @doc `proc_lib:spawn_link/4' on this node; `notsup' for another node.
-spec spawn_link(node(), module(), atom(), [term()]) -> pid().
spawn_link(Node, M, F, A) -> local_only(Node), proc_lib:spawn_link(M, F, A).

%% @doc `proc_lib:spawn_opt/2'.
-spec spawn_opt(fun(() -> term()), list()) -> pid() | {pid(), reference()}.
spawn_opt(Fun, Opts) -> proc_lib:spawn_opt(Fun, Opts).

%% @doc Spawns `Fun' on `Node' with options; `monitor' sets a Partisan monitor.
-spec spawn_opt(node(), fun(() -> term()), list()) -> pid() | {pid(), term()}.
spawn_opt(Node, Fun, Opts) -> spawn_opt_on(Node, [Fun], Opts).

%% @doc `proc_lib:spawn_opt/4'.
-spec spawn_opt(module(), atom(), [term()], list()) -> pid() | {pid(), reference()}.
spawn_opt(M, F, A, Opts) -> proc_lib:spawn_opt(M, F, A, Opts).

%% @doc Spawns `M:F(A)' on `Node' with options; `monitor' sets a Partisan monitor.
-spec spawn_opt(node(), module(), atom(), [term()], list()) -> pid() | {pid(), term()}.
spawn_opt(Node, M, F, A, Opts) -> spawn_opt_on(Node, [M, F, A], Opts).

spawn_opt_on(Node, Args, Opts) ->
    lists:member(link, Opts) andalso local_only(Node),
    {Monitor, Rest} = lists:partition(fun(O) -> O =:= monitor end, Opts),
    case Node =:= partisan:node() of
        true ->
            erlang:apply(proc_lib, spawn_opt, Args ++ [Opts]);
        false ->
            Pid = on(Node, spawn_opt, Args ++ [Rest]),
            case Monitor of
                [] -> Pid;
                _ -> {Pid, partisan:monitor(process, Pid)}
            end
    end.

%% Runs proc_lib:F(Args) where the process is to live.
on(Node, F, Args) ->
    case Node =:= partisan:node() of
        true -> erlang:apply(proc_lib, F, Args);
        false -> partisan_gen:node_apply(Node, proc_lib, F, Args, infinity)
    end.

local_only(Node) ->
    Node =:= partisan:node() orelse erlang:error(notsup).

%% @doc `proc_lib:start/3'.
-spec start(module(), atom(), [term()]) -> term().
start(M, F, A) -> proc_lib:start(M, F, A).
%% @doc `proc_lib:start/4'.
-spec start(module(), atom(), [term()], timeout()) -> term().
start(M, F, A, Timeout) -> proc_lib:start(M, F, A, Timeout).
%% @doc `proc_lib:start/5'.
-spec start(module(), atom(), [term()], timeout(), list()) -> term().
start(M, F, A, Timeout, SpawnOpts) -> proc_lib:start(M, F, A, Timeout, SpawnOpts).
%% @doc `proc_lib:start_link/3'.
-spec start_link(module(), atom(), [term()]) -> term().
start_link(M, F, A) -> proc_lib:start_link(M, F, A).
%% @doc `proc_lib:start_link/4'.
-spec start_link(module(), atom(), [term()], timeout()) -> term().
start_link(M, F, A, Timeout) -> proc_lib:start_link(M, F, A, Timeout).
%% @doc `proc_lib:start_link/5'.
-spec start_link(module(), atom(), [term()], timeout(), list()) -> term().
start_link(M, F, A, Timeout, SpawnOpts) -> proc_lib:start_link(M, F, A, Timeout, SpawnOpts).
%% @doc `proc_lib:start_monitor/3'.
-spec start_monitor(module(), atom(), [term()]) -> term().
start_monitor(M, F, A) -> proc_lib:start_monitor(M, F, A).
%% @doc `proc_lib:start_monitor/4'.
-spec start_monitor(module(), atom(), [term()], timeout()) -> term().
start_monitor(M, F, A, Timeout) -> proc_lib:start_monitor(M, F, A, Timeout).
%% @doc `proc_lib:start_monitor/5'.
-spec start_monitor(module(), atom(), [term()], timeout(), list()) -> term().
start_monitor(M, F, A, Timeout, SpawnOpts) -> proc_lib:start_monitor(M, F, A, Timeout, SpawnOpts).
%% @doc `proc_lib:hibernate/3'.
-spec hibernate(module(), atom(), [term()]) -> no_return().
hibernate(M, F, A) -> proc_lib:hibernate(M, F, A).
%% @doc `proc_lib:init_ack/1'.
-spec init_ack(term()) -> ok.
init_ack(Ret) -> proc_lib:init_ack(Ret).
%% @doc `proc_lib:init_ack/2'.
-spec init_ack(pid(), term()) -> ok.
init_ack(Parent, Ret) -> proc_lib:init_ack(Parent, Ret).
%% @doc `proc_lib:format/1'.
-spec format(term()) -> string().
format(CrashReport) -> proc_lib:format(CrashReport).
%% @doc `proc_lib:format/2'.
-spec format(term(), term()) -> string().
format(CrashReport, Encoding) -> proc_lib:format(CrashReport, Encoding).
%% @doc `proc_lib:format/3'.
-spec format(term(), term(), term()) -> string().
format(CrashReport, Encoding, Depth) -> proc_lib:format(CrashReport, Encoding, Depth).
%% @doc `proc_lib:report_cb/2'.
-spec report_cb(term(), term()) -> term().
report_cb(Report, Opts) -> proc_lib:report_cb(Report, Opts).
%% @doc `proc_lib:initial_call/1'.
-spec initial_call(term()) -> term().
initial_call(Process) -> proc_lib:initial_call(Process).
%% @doc `proc_lib:translate_initial_call/1'.
-spec translate_initial_call(term()) -> term().
translate_initial_call(Process) -> proc_lib:translate_initial_call(Process).
%% @doc Stops a process on any node (`proc_lib:stop/1').
-spec stop(partisan_otp:server_ref()) -> ok.
stop(Process) -> partisan_gen:server_apply(Process, proc_lib, stop, [], infinity).
%% @doc Stops a process on any node with `Reason', waiting up to `Timeout' (`proc_lib:stop/3').
-spec stop(partisan_otp:server_ref(), term(), timeout()) -> ok.
stop(Process, Reason, Timeout) -> partisan_gen:server_apply(Process, proc_lib, stop, [Reason, Timeout], infinity).
%% @private
init_p(Parent, Ancestors, Fun) -> proc_lib:init_p(Parent, Ancestors, Fun).
%% @private
init_p(Parent, Ancestors, M, F, A) -> proc_lib:init_p(Parent, Ancestors, M, F, A).
%% @private
wake_up(M, F, A) -> proc_lib:wake_up(M, F, A).
