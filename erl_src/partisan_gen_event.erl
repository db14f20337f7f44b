%% @doc `gen_event' across Partisan nodes, with Partisan v5's API.
%%
%% Event managers are OTP's own `gen_event' processes, unchanged. For a manager on another node,
%% `notify/2' is one message; the other operations run OTP's `gen_event' function on the
%% manager's node (see `partisan_gen:server_apply/5') and return or raise what it returns or
%% raises there (`{nodedown, Node}' when the node is lost). A supervised handler added from
%% another node (`add_sup_handler/3', `swap_sup_handler/3') is linked to a proxy on the manager's
%% node that watches the caller with a Partisan monitor: the caller receives
%% `{gen_event_EXIT, Handler, Reason}' as usual, and the handler is removed when the caller
%% exits or its node is lost, as a link would do.
-module(partisan_gen_event).

-export([start/0, start/1, start/2, start_link/0, start_link/1, start_link/2, start_monitor/0,
         start_monitor/1, start_monitor/2, stop/1, stop/3, notify/2, sync_notify/2,
         add_handler/3, add_sup_handler/3, delete_handler/3, swap_handler/3, swap_sup_handler/3,
         which_handlers/1, call/3, call/4, send_request/3, wait_response/2, receive_response/2,
         check_response/2]).
%% OTP's manager loop internals, for code that names this module where gen_event's are meant.
-export([wake_hib/5, init_it/6, system_continue/3, system_terminate/4, system_code_change/4,
         system_get_state/1, system_replace_state/2, format_log/1, format_log/2]).
%% Runs on the manager's node for a supervised handler of a remote caller.
-export([sup_proxy/5]).

-type manager() :: partisan_otp:server_ref().

%% @doc Starts an unnamed event manager (`gen_event:start/0').
-spec start() -> term().
start() -> gen_event:start().
%% @doc Starts an event manager with a name or options (`gen_event:start/1').
-spec start(term()) -> term().
start(NameOrOpts) -> gen_event:start(strip(NameOrOpts)).
%% @doc Starts a named event manager with options (`gen_event:start/2').
-spec start(term(), list()) -> term().
start(Name, Opts) -> gen_event:start(Name, partisan_gen:strip_opts(Opts)).
%% @doc Starts an unnamed event manager linked to the caller.
-spec start_link() -> term().
start_link() -> gen_event:start_link().
%% @doc Starts an event manager linked to the caller, with a name or options.
-spec start_link(term()) -> term().
start_link(NameOrOpts) -> gen_event:start_link(strip(NameOrOpts)).
%% @doc Starts a named event manager linked to the caller, with options.
-spec start_link(term(), list()) -> term().
start_link(Name, Opts) -> gen_event:start_link(Name, partisan_gen:strip_opts(Opts)).
%% @doc Starts an unnamed event manager monitored by the caller.
-spec start_monitor() -> term().
start_monitor() -> gen_event:start_monitor().
%% @doc Starts an event manager monitored by the caller, with a name or options.
-spec start_monitor(term()) -> term().
start_monitor(NameOrOpts) -> gen_event:start_monitor(strip(NameOrOpts)).
%% @doc Starts a named event manager monitored by the caller, with options.
-spec start_monitor(term(), list()) -> term().
start_monitor(Name, Opts) -> gen_event:start_monitor(Name, partisan_gen:strip_opts(Opts)).

strip(Opts) when is_list(Opts) -> partisan_gen:strip_opts(Opts);
strip(Name) -> Name.

%% @doc Stops a manager (here or on another node).
-spec stop(manager()) -> ok.
stop(M) -> partisan_gen:stop(M).

%% @doc Stops a manager (here or on another node) with `Reason', waiting up to `Timeout'.
-spec stop(manager(), term(), timeout()) -> ok.
stop(M, Reason, Timeout) -> partisan_gen:stop(M, Reason, Timeout).

%% @doc Sends an event to a manager, here or on another node, without waiting. Always `ok'.
-spec notify(manager(), term()) -> ok.
notify(M, Event) ->
    _ = partisan_otp:send_to(M, {notify, Event}, undefined),
    ok.

%% @doc Sends an event and waits until every handler has handled it.
-spec sync_notify(manager(), term()) -> ok.
sync_notify(M, Event) -> partisan_gen:server_apply(M, gen_event, sync_notify, [Event], infinity).

%% @doc Adds a handler (`gen_event:add_handler/3').
-spec add_handler(manager(), term(), term()) -> term().
add_handler(M, Handler, Args) -> partisan_gen:server_apply(M, gen_event, add_handler, [Handler, Args], infinity).

%% @doc Adds a handler supervised by the caller (`gen_event:add_sup_handler/3'), on any node.
-spec add_sup_handler(manager(), term(), term()) -> term().
add_sup_handler(M, Handler, Args) ->
    sup_handler(M, add_sup_handler, [Handler, Args]).

%% @doc Removes a handler (`gen_event:delete_handler/3').
-spec delete_handler(manager(), term(), term()) -> term().
delete_handler(M, Handler, Args) ->
    partisan_gen:server_apply(M, gen_event, delete_handler, [Handler, Args], infinity).

%% @doc Replaces a handler (`gen_event:swap_handler/3').
-spec swap_handler(manager(), {term(), term()}, {term(), term()}) -> ok | {error, term()}.
swap_handler(M, Old, New) -> partisan_gen:server_apply(M, gen_event, swap_handler, [Old, New], infinity).

%% @doc Replaces a handler with one supervised by the caller (`gen_event:swap_sup_handler/3').
-spec swap_sup_handler(manager(), {term(), term()}, {term(), term()}) -> ok | {error, term()}.
swap_sup_handler(M, Old, New) ->
    sup_handler(M, swap_sup_handler, [Old, New]).

%% @doc The installed handlers (`gen_event:which_handlers/1').
-spec which_handlers(manager()) -> [term()].
which_handlers(M) -> partisan_gen:server_apply(M, gen_event, which_handlers, [], infinity).

%% @doc Calls one handler (`gen_event:call/3').
-spec call(manager(), term(), term()) -> term().
call(M, Handler, Query) -> partisan_gen:server_apply(M, gen_event, call, [Handler, Query], infinity).

%% @doc Calls one handler with a timeout (`gen_event:call/4').
-spec call(manager(), term(), term(), timeout()) -> term().
call(M, Handler, Query, Timeout) ->
    partisan_gen:server_apply(M, gen_event, call, [Handler, Query, Timeout], infinity).

%% @doc Sends a call to one handler without waiting.
-spec send_request(manager(), term(), term()) -> partisan_gen:request_id().
send_request(M, Handler, Query) ->
    partisan_gen:send_request(M, self(), {call, Handler, Query}).

%% @doc Waits for the answer of a request; it stays active on timeout.
-spec wait_response(partisan_gen:request_id(), timeout()) -> {reply, term()} | {error, {term(), term()}} | timeout.
wait_response(ReqId, Timeout) -> partisan_gen:wait_response(ReqId, Timeout).

%% @doc Waits for the answer of a request and abandons it on timeout.
-spec receive_response(partisan_gen:request_id(), timeout()) -> {reply, term()} | {error, {term(), term()}} | timeout.
receive_response(ReqId, Timeout) -> partisan_gen:receive_response(ReqId, Timeout).

%% @doc Whether a received message answers a request.
-spec check_response(term(), partisan_gen:request_id()) -> {reply, term()} | {error, {term(), term()}} | no_reply.
check_response(Msg, ReqId) -> partisan_gen:check_response(Msg, ReqId).

%% A supervised handler: linked to the caller here, to a proxy watching the caller elsewhere.
sup_handler(M, Fun, Args) ->
    case partisan_otp:resolve(M) of
        {local, _} ->
            erlang:apply(gen_event, Fun, [M | Args]);
        {remote, _, _} ->
            partisan_gen:server_apply(M, ?MODULE, sup_proxy, [Fun, Args, self(), partisan:node()],
                                      infinity);
        undefined ->
            exit(noproc)
    end.

%% @private Starts, on the manager's node, the process that supervises a handler for `Caller' on
%% `CallerNode', and returns the result of `gen_event:Fun/3'.
-spec sup_proxy(pid() | atom(), atom(), [term()], pid(), node()) -> term().
sup_proxy(M, Fun, Args, Caller, CallerNode) ->
    Parent = self(),
    {Proxy, Mref} = spawn_monitor(fun() -> proxy_init(Parent, M, Fun, Args, Caller, CallerNode) end),
    receive
        {Proxy, Result} -> erlang:demonitor(Mref, [flush]), Result;
        {'DOWN', Mref, _, _, Reason} -> exit(Reason)
    end.

proxy_init(Parent, M, Fun, Args, Caller, CallerNode) ->
    CallerRef = partisan:monitor(process, Caller),
    Result = erlang:apply(gen_event, Fun, [M | Args]),
    Parent ! {self(), Result},
    case Result of
        ok -> proxy_loop(CallerRef, Caller, CallerNode);
        _ -> ok
    end.

%% The handler is linked to this process: it forwards the manager's notice of its removal to
%% the caller, and exits (removing the handler) when the caller is gone.
proxy_loop(CallerRef, Caller, CallerNode) ->
    receive
        {gen_event_EXIT, _, _} = Notice ->
            _ = partisan_otp:send(CallerNode, partisan_otp:dest(Caller), Notice, #{}),
            ok;
        {'DOWN', CallerRef, process, _, Reason} ->
            exit({caller_down, Reason})
    end.

%% @private
wake_hib(Parent, ServerName, MSL, HibernateAfter, Debug) ->
    gen_event:wake_hib(Parent, ServerName, MSL, HibernateAfter, Debug).
%% @private
init_it(Starter, Parent, Name, Mod, Args, Opts) -> gen_event:init_it(Starter, Parent, Name, Mod, Args, Opts).
%% @private
system_continue(Parent, Debug, Misc) -> gen_event:system_continue(Parent, Debug, Misc).
-dialyzer({nowarn_function, system_terminate/4}).
%% @private
-spec system_terminate(term(), pid(), [sys:dbg_opt()], term()) -> no_return().
system_terminate(Reason, Parent, Debug, Misc) -> gen_event:system_terminate(Reason, Parent, Debug, Misc).
%% @private
system_code_change(Misc, Module, OldVsn, Extra) -> gen_event:system_code_change(Misc, Module, OldVsn, Extra).
%% @private
system_get_state(Misc) -> gen_event:system_get_state(Misc).
%% @private
system_replace_state(StateFun, Misc) -> gen_event:system_replace_state(StateFun, Misc).
%% @private
format_log(Report) -> gen_event:format_log(Report).
%% @private
format_log(Report, FormatOpts) -> gen_event:format_log(Report, FormatOpts).
