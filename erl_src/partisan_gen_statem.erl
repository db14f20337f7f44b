%% @doc `gen_statem' across Partisan nodes, with Partisan v5's API.
%%
%% State machines are OTP's own `gen_statem' processes, unchanged; calls to one on another node
%% go through that node's call relay in one round trip (see `partisan_gen') and fail as
%% `gen_statem:call' fails over Distributed Erlang, with `{partisan_gen_statem, call, Args}' as
%% the location. State and event timeouts run inside the state machine as usual.
-module(partisan_gen_statem).

-export([start/3, start/4, start_link/3, start_link/4, start_monitor/3, start_monitor/4,
         stop/1, stop/3, call/2, call/3, cast/2, cast/3, send_request/2, send_request/3,
         wait_response/1, wait_response/2, receive_response/1, receive_response/2,
         check_response/2, reply/1, reply/2, enter_loop/4, enter_loop/5, enter_loop/6]).
%% OTP's state machine loop internals, for code that names this module where gen_statem's are.
-export([init_it/6, system_continue/3, system_terminate/4, system_code_change/4,
         system_get_state/1, system_replace_state/2, wakeup_from_hibernate/3, format_log/1,
         format_log/2]).

-type server_ref() :: partisan_otp:server_ref().
-type call_timeout() :: timeout() | {dirty_timeout | clean_timeout, timeout()}
                      | [{timeout, timeout()} | {channel, atom()}]
                      | #{timeout => timeout(), channel => atom()}.

%% @doc Starts a state machine without a link (`gen_statem:start/3').
-spec start(module(), term(), list()) -> term().
start(Mod, Args, Opts) -> gen_statem:start(Mod, Args, partisan_gen:strip_opts(Opts)).

%% @doc Starts a registered state machine without a link (`gen_statem:start/4').
-spec start(term(), module(), term(), list()) -> term().
start(Name, Mod, Args, Opts) -> gen_statem:start(Name, Mod, Args, partisan_gen:strip_opts(Opts)).

%% @doc Starts a state machine linked to the caller (`gen_statem:start_link/3').
-spec start_link(module(), term(), list()) -> term().
start_link(Mod, Args, Opts) -> gen_statem:start_link(Mod, Args, partisan_gen:strip_opts(Opts)).

%% @doc Starts a registered state machine linked to the caller (`gen_statem:start_link/4').
-spec start_link(term(), module(), term(), list()) -> term().
start_link(Name, Mod, Args, Opts) -> gen_statem:start_link(Name, Mod, Args, partisan_gen:strip_opts(Opts)).

%% @doc Starts a state machine monitored by the caller (`gen_statem:start_monitor/3').
-spec start_monitor(module(), term(), list()) -> term().
start_monitor(Mod, Args, Opts) -> gen_statem:start_monitor(Mod, Args, partisan_gen:strip_opts(Opts)).

%% @doc Starts a registered state machine monitored by the caller (`gen_statem:start_monitor/4').
-spec start_monitor(term(), module(), term(), list()) -> term().
start_monitor(Name, Mod, Args, Opts) ->
    gen_statem:start_monitor(Name, Mod, Args, partisan_gen:strip_opts(Opts)).

%% @doc Stops a state machine (here or on another node) with reason `normal'.
-spec stop(server_ref()) -> ok.
stop(Server) -> partisan_gen:stop(Server).

%% @doc Stops a state machine (here or on another node), waiting up to `Timeout'.
-spec stop(server_ref(), term(), timeout()) -> ok.
stop(Server, Reason, Timeout) -> partisan_gen:stop(Server, Reason, Timeout).

%% @doc Calls a state machine without a timeout (as `gen_statem:call/2').
-spec call(server_ref(), term()) -> term().
call(Server, Request) -> call(Server, Request, infinity).

%% @doc Calls a state machine; the third argument is a timeout, `{dirty_timeout, T}',
%% `{clean_timeout, T}' (both mean `T' here: late answers are always dropped) or options
%% `[{timeout, T}, {channel, C}]'.
-spec call(server_ref(), term(), call_timeout()) -> term().
call(Server, Request, Timeout) ->
    Opts = case Timeout of
        {Kind, T} when Kind =:= dirty_timeout; Kind =:= clean_timeout -> T;
        _ -> Timeout
    end,
    try partisan_gen:call(Server, '$gen_call', Request, Opts) of
        {ok, Reply} -> Reply
    catch
        exit:Reason -> exit({Reason, {?MODULE, call, [Server, Request, Timeout]}})
    end.

%% @doc Casts an event to a state machine, here or on another node. Always `ok'.
-spec cast(server_ref(), term()) -> ok.
cast(Server, Msg) -> cast(Server, Msg, []).

%% @doc `cast/2' with options (`channel').
-spec cast(server_ref(), term(), [term()] | map()) -> ok.
cast(Server, Msg, Opts) ->
    _ = partisan_otp:send_to(Server, {'$gen_cast', Msg}, partisan_otp:channel(Opts)),
    ok.

%% @doc Sends a call request without waiting.
-spec send_request(server_ref(), term()) -> partisan_gen:request_id().
send_request(Server, Request) -> partisan_gen:send_request(Server, '$gen_call', Request).

%% @doc `send_request/2' with options (`channel').
-spec send_request(server_ref(), term(), partisan_gen:call_opts()) -> partisan_gen:request_id().
send_request(Server, Request, Opts) -> partisan_gen:send_request(Server, '$gen_call', Request, Opts).

%% @doc Waits for the answer of a request.
-spec wait_response(partisan_gen:request_id()) -> {reply, term()} | {error, {term(), term()}}.
wait_response(ReqId) -> partisan_gen:wait_response(ReqId, infinity).

%% @doc Waits up to `Timeout' for the answer of a request; it stays active on timeout.
-spec wait_response(partisan_gen:request_id(), timeout()) -> {reply, term()} | {error, {term(), term()}} | timeout.
wait_response(ReqId, Timeout) -> partisan_gen:wait_response(ReqId, Timeout).

%% @doc Waits for the answer of a request.
-spec receive_response(partisan_gen:request_id()) -> {reply, term()} | {error, {term(), term()}}.
receive_response(ReqId) -> partisan_gen:receive_response(ReqId, infinity).

%% @doc Waits up to `Timeout' for the answer of a request and abandons it on timeout.
-spec receive_response(partisan_gen:request_id(), timeout()) -> {reply, term()} | {error, {term(), term()}} | timeout.
receive_response(ReqId, Timeout) -> partisan_gen:receive_response(ReqId, Timeout).

%% @doc Whether a received message answers a request.
-spec check_response(term(), partisan_gen:request_id()) -> {reply, term()} | {error, {term(), term()}} | no_reply.
check_response(Msg, ReqId) -> partisan_gen:check_response(Msg, ReqId).

%% @doc Answers calls: `{reply, From, Reply}' or a list of them.
-spec reply({reply, {term(), term()}, term()} | [{reply, {term(), term()}, term()}]) -> ok.
reply({reply, From, Reply}) -> reply(From, Reply);
reply(Replies) when is_list(Replies) -> lists:foreach(fun reply/1, Replies).

%% @doc Answers a call; works with a `From' of a caller on any node.
-spec reply({term(), term()}, term()) -> ok.
reply(From, Reply) -> partisan_gen:reply(From, Reply).

%% @doc Makes the calling process a state machine (`gen_statem:enter_loop/4').
-spec enter_loop(module(), list(), term(), term()) -> no_return().
enter_loop(Mod, Opts, State, Data) ->
    gen_statem:enter_loop(Mod, partisan_gen:strip_opts(Opts), State, Data).

%% @doc `enter_loop/4' with a name or actions.
-spec enter_loop(module(), list(), term(), term(), term()) -> no_return().
enter_loop(Mod, Opts, State, Data, NameOrActions) ->
    gen_statem:enter_loop(Mod, partisan_gen:strip_opts(Opts), State, Data, NameOrActions).

%% @doc `enter_loop/4' with a name and actions.
-spec enter_loop(module(), list(), term(), term(), term(), term()) -> no_return().
enter_loop(Mod, Opts, State, Data, Name, Actions) ->
    gen_statem:enter_loop(Mod, partisan_gen:strip_opts(Opts), State, Data, Name, Actions).

%% @private
init_it(Starter, Parent, Name, Mod, Args, Opts) -> gen_statem:init_it(Starter, Parent, Name, Mod, Args, Opts).
%% @private
system_continue(Parent, Debug, Misc) -> gen_statem:system_continue(Parent, Debug, Misc).
%% @private
system_terminate(Reason, Parent, Debug, Misc) -> gen_statem:system_terminate(Reason, Parent, Debug, Misc).
%% @private
system_code_change(Misc, Module, OldVsn, Extra) -> gen_statem:system_code_change(Misc, Module, OldVsn, Extra).
%% @private
system_get_state(Misc) -> gen_statem:system_get_state(Misc).
%% @private
system_replace_state(StateFun, Misc) -> gen_statem:system_replace_state(StateFun, Misc).
%% @private
wakeup_from_hibernate(Parent, Debug, S) -> gen_statem:wakeup_from_hibernate(Parent, Debug, S).
%% @private
format_log(Report) -> gen_statem:format_log(Report).
%% @private
format_log(Report, FormatOpts) -> gen_statem:format_log(Report, FormatOpts).
