%% @doc `supervisor' across Partisan nodes, with Partisan v5's API.
%%
%% Supervisors are OTP's own. For a supervisor on another node, each operation runs OTP's
%% `supervisor' function on that node (see `partisan_gen:server_apply/5'), so children start,
%% restart and terminate there exactly as they would locally; the result (or exception) comes
%% back, and `{nodedown, Node}' is raised when the node is lost.
%%
%% ```
%% {ok, Pid} = partisan_gen_supervisor:start_child({my_sup, 'b@127.0.0.1'}, ChildSpec),
%% [{Id, Child, worker, _}] = partisan_gen_supervisor:which_children({my_sup, 'b@127.0.0.1'}).
%% '''
-module(partisan_gen_supervisor).

-export([start_link/2, start_link/3, start_child/2, restart_child/2, delete_child/2,
         terminate_child/2, which_children/1, count_children/1, check_childspecs/1,
         check_childspecs/2, get_childspec/2, get_callback_module/1, format_log/1,
         format_log/2]).

-type sup_ref() :: partisan_otp:server_ref().

%% @doc Starts a supervisor linked to the caller (`supervisor:start_link/2').
-spec start_link(module(), term()) -> term().
start_link(Mod, Args) -> supervisor:start_link(Mod, Args).

%% @doc Starts a registered supervisor linked to the caller (`supervisor:start_link/3').
-spec start_link(term(), module(), term()) -> term().
start_link(Name, Mod, Args) -> supervisor:start_link(Name, Mod, Args).

%% @doc Starts a child under a supervisor on any node.
-spec start_child(sup_ref(), term()) -> term().
start_child(Sup, ChildSpec) -> at(Sup, start_child, [ChildSpec]).

%% @doc Restarts a terminated child.
-spec restart_child(sup_ref(), term()) -> term().
restart_child(Sup, Id) -> at(Sup, restart_child, [Id]).

%% @doc Deletes a terminated child's spec.
-spec delete_child(sup_ref(), term()) -> ok | {error, term()}.
delete_child(Sup, Id) -> at(Sup, delete_child, [Id]).

%% @doc Terminates a child.
-spec terminate_child(sup_ref(), term()) -> ok | {error, term()}.
terminate_child(Sup, Id) -> at(Sup, terminate_child, [Id]).

%% @doc The children: `[{Id, Child, Type, Modules}]' (pids are of the supervisor's node).
-spec which_children(sup_ref()) -> [{term(), term(), worker | supervisor, term()}].
which_children(Sup) -> at(Sup, which_children, []).

%% @doc Child counts (`supervisor:count_children/1').
-spec count_children(sup_ref()) -> [{atom(), non_neg_integer()}].
count_children(Sup) -> at(Sup, count_children, []).

%% @doc A child's spec (`supervisor:get_childspec/2').
-spec get_childspec(sup_ref(), term()) -> {ok, map()} | {error, not_found}.
get_childspec(Sup, Id) -> at(Sup, get_childspec, [Id]).

%% @doc The supervisor's callback module (`supervisor:get_callback_module/1').
-spec get_callback_module(pid()) -> module().
get_callback_module(Sup) -> at(Sup, get_callback_module, []).

%% @doc Checks child specs (`supervisor:check_childspecs/1'); runs here.
-spec check_childspecs([term()]) -> ok | {error, term()}.
check_childspecs(Specs) -> supervisor:check_childspecs(Specs).

%% @doc Checks child specs with auto-shutdown (`supervisor:check_childspecs/2'); runs here.
-spec check_childspecs([term()], term()) -> ok | {error, term()}.
check_childspecs(Specs, AutoShutdown) -> supervisor:check_childspecs(Specs, AutoShutdown).

%% @private
format_log(Report) -> supervisor:format_log(Report).
%% @private
format_log(Report, FormatOpts) -> supervisor:format_log(Report, FormatOpts).

at(Sup, Fun, Args) -> partisan_gen:server_apply(Sup, supervisor, Fun, Args, infinity).
