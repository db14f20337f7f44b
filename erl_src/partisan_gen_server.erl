%% @doc `gen_server' across Partisan nodes, with Partisan v5's API.
%%
%% Servers are OTP's own `gen_server' processes, unchanged: `start*/3,4' start them with
%% `gen_server' (the Partisan option `{channel, C}' makes the answers to remote callers travel on
%% channel `C'). Only the remote path is Partisan's: `call/2,3' to a server on another node is one
%% round trip through that node's call relay (see `partisan_gen') and fails the way
%% `gen_server:call' fails over Distributed Erlang: `{noproc, _}', `{nodedown, Node}',
%% `{timeout, _}', the server's exit reason (`{normal, _}', ...), with
%% `{partisan_gen_server, call, Args}' as the location. Server references: a pid, a local name,
%% `{Name, Node}', `{global, _}', `{via, _, _}' or a Partisan remote reference.
%%
%% ```
%% {ok, _} = partisan_gen_server:start_link({local, counter}, counter, [], [{channel, data}]),
%% 1 = partisan_gen_server:call({counter, 'b@127.0.0.1'}, incr, [{timeout, 1000}, {channel, data}]).
%% '''
-module(partisan_gen_server).

-export([start/3, start/4, start_link/3, start_link/4, start_monitor/3, start_monitor/4,
         stop/1, stop/3, call/2, call/3, send_request/2, send_request/3, wait_response/2,
         receive_response/2, check_response/2, cast/2, cast/3, reply/2, abcast/2, abcast/3,
         multi_call/2, multi_call/3, multi_call/4, enter_loop/3, enter_loop/4, enter_loop/5]).
%% OTP's server loop internals, for code that names this module where gen_server's are meant.
-export([wake_hib/6, system_continue/3, system_terminate/4, system_code_change/4,
         system_get_state/1, system_replace_state/2, format_log/1, format_log/2, init_it/6]).

-type server_ref() :: partisan_otp:server_ref().
-type start_ret() :: {ok, pid()} | ignore | {error, term()}.
-export_type([server_ref/0]).

%% @doc Starts a server without a link (`gen_server:start/3').
-spec start(module(), term(), list()) -> start_ret().
start(Mod, Args, Opts) -> started(gen_server:start(Mod, Args, partisan_gen:strip_opts(Opts)), Opts).

%% @doc Starts a registered server without a link (`gen_server:start/4').
-spec start(term(), module(), term(), list()) -> start_ret().
start(Name, Mod, Args, Opts) ->
    started(gen_server:start(Name, Mod, Args, partisan_gen:strip_opts(Opts)), Opts).

%% @doc Starts a server linked to the caller (`gen_server:start_link/3').
-spec start_link(module(), term(), list()) -> start_ret().
start_link(Mod, Args, Opts) ->
    started(gen_server:start_link(Mod, Args, partisan_gen:strip_opts(Opts)), Opts).

%% @doc Starts a registered server linked to the caller (`gen_server:start_link/4').
-spec start_link(term(), module(), term(), list()) -> start_ret().
start_link(Name, Mod, Args, Opts) ->
    started(gen_server:start_link(Name, Mod, Args, partisan_gen:strip_opts(Opts)), Opts).

%% @doc Starts a server monitored by the caller (`gen_server:start_monitor/3').
-spec start_monitor(module(), term(), list()) -> {ok, {pid(), reference()}} | ignore | {error, term()}.
start_monitor(Mod, Args, Opts) ->
    started(gen_server:start_monitor(Mod, Args, partisan_gen:strip_opts(Opts)), Opts).

%% @doc Starts a registered server monitored by the caller (`gen_server:start_monitor/4').
-spec start_monitor(term(), module(), term(), list()) -> {ok, {pid(), reference()}} | ignore | {error, term()}.
start_monitor(Name, Mod, Args, Opts) ->
    started(gen_server:start_monitor(Name, Mod, Args, partisan_gen:strip_opts(Opts)), Opts).

%% Records the server's `{channel, C}' for the relays once it runs.
started({ok, {Pid, _}} = Ok, Opts) -> partisan_monitor:server_channel(Pid, partisan_otp:channel(Opts)), Ok;
started({ok, Pid} = Ok, Opts) -> partisan_monitor:server_channel(Pid, partisan_otp:channel(Opts)), Ok;
started(Other, _) -> Other.

%% @doc Stops a server (here or on another node) with reason `normal'.
-spec stop(server_ref()) -> ok.
stop(Server) -> partisan_gen:stop(Server).

%% @doc Stops a server (here or on another node) and waits up to `Timeout' for it to terminate.
-spec stop(server_ref(), term(), timeout()) -> ok.
stop(Server, Reason, Timeout) -> partisan_gen:stop(Server, Reason, Timeout).

%% @doc Calls a server and waits 5 s at most for its answer.
-spec call(server_ref(), term()) -> term().
call(Server, Request) ->
    call(Server, Request, 5000).

%% @doc Calls a server; the third argument is a timeout or options `[{timeout, T}, {channel, C}]'.
-spec call(server_ref(), term(), partisan_gen:call_opts()) -> term().
call(Server, Request, Opts) ->
    try partisan_gen:call(Server, '$gen_call', Request, Opts) of
        {ok, Reply} -> Reply
    catch
        exit:Reason -> exit({Reason, {?MODULE, call, [Server, Request, Opts]}})
    end.

%% @doc Sends a request without waiting (`gen_server:send_request/2').
-spec send_request(server_ref(), term()) -> partisan_gen:request_id().
send_request(Server, Request) -> partisan_gen:send_request(Server, '$gen_call', Request).

%% @doc `send_request/2' with options (`channel').
-spec send_request(server_ref(), term(), partisan_gen:call_opts()) -> partisan_gen:request_id().
send_request(Server, Request, Opts) -> partisan_gen:send_request(Server, '$gen_call', Request, Opts).

%% @doc Waits for the answer of a request; it stays active on timeout.
-spec wait_response(partisan_gen:request_id(), timeout()) -> {reply, term()} | {error, {term(), term()}} | timeout.
wait_response(ReqId, Timeout) -> partisan_gen:wait_response(ReqId, Timeout).

%% @doc Waits for the answer of a request and abandons it on timeout.
-spec receive_response(partisan_gen:request_id(), timeout()) -> {reply, term()} | {error, {term(), term()}} | timeout.
receive_response(ReqId, Timeout) -> partisan_gen:receive_response(ReqId, Timeout).

%% @doc Whether a received message answers a request.
-spec check_response(term(), partisan_gen:request_id()) -> {reply, term()} | {error, {term(), term()}} | no_reply.
check_response(Msg, ReqId) -> partisan_gen:check_response(Msg, ReqId).

%% @doc Casts a request to a server, here or on another node. Always `ok'.
-spec cast(server_ref(), term()) -> ok.
cast(Server, Msg) -> cast(Server, Msg, []).

%% @doc `cast/2' with options (`channel').
-spec cast(server_ref(), term(), [term()] | map()) -> ok.
cast(Server, Msg, Opts) ->
    _ = partisan_otp:send_to(Server, {'$gen_cast', Msg}, partisan_otp:channel(Opts)),
    ok.

%% @doc Answers a call; works with a `From' of a caller on any node.
-spec reply({term(), term()}, term()) -> ok.
reply(From, Reply) -> partisan_gen:reply(From, Reply).

%% @doc Casts to the server registered as `Name' on every connected node and this one.
-spec abcast(atom(), term()) -> abcast.
abcast(Name, Msg) -> abcast([partisan:node() | partisan:nodes()], Name, Msg).

%% @doc Casts to the server registered as `Name' on each of `Nodes'.
-spec abcast([node()], atom(), term()) -> abcast.
abcast(Nodes, Name, Msg) ->
    [cast({Name, Node}, Msg) || Node <- Nodes],
    abcast.

%% @doc Calls the server `Name' on every connected node and this one.
-spec multi_call(atom(), term()) -> {[{node(), term()}], [node()]}.
multi_call(Name, Request) -> multi_call([partisan:node() | partisan:nodes()], Name, Request).

%% @doc Calls the server `Name' on each of `Nodes' (no timeout).
-spec multi_call([node()], atom(), term()) -> {[{node(), term()}], [node()]}.
multi_call(Nodes, Name, Request) -> multi_call(Nodes, Name, Request, infinity).

%% @doc Calls the server `Name' on each of `Nodes' in parallel; returns the answers and the nodes
%% that did not answer within `Timeout' (down, no such server, server crashed).
-spec multi_call([node()], atom(), term(), timeout()) -> {[{node(), term()}], [node()]}.
multi_call(Nodes, Name, Request, Timeout) when is_list(Nodes), is_atom(Name) ->
    Deadline = case Timeout of infinity -> infinity; _ -> erlang:monotonic_time(millisecond) + Timeout end,
    Requests = [{Node, send_request({Name, Node}, Request)} || Node <- lists:usort(Nodes)],
    lists:foldr(fun({Node, ReqId}, {Replies, Bad}) ->
                        case receive_response(ReqId, remaining(Deadline)) of
                            {reply, Reply} -> {[{Node, Reply} | Replies], Bad};
                            _ -> {Replies, [Node | Bad]}
                        end
                end, {[], []}, Requests).

remaining(infinity) -> infinity;
remaining(Deadline) -> max(0, Deadline - erlang:monotonic_time(millisecond)).

%% @doc Makes the calling process a server (`gen_server:enter_loop/3').
-spec enter_loop(module(), list(), term()) -> no_return().
enter_loop(Mod, Opts, State) -> gen_server:enter_loop(Mod, partisan_gen:strip_opts(Opts), State).

%% @doc `enter_loop/3' with a registered name or a timeout.
-spec enter_loop(module(), list(), term(), term()) -> no_return().
enter_loop(Mod, Opts, State, NameOrTimeout) ->
    gen_server:enter_loop(Mod, partisan_gen:strip_opts(Opts), State, NameOrTimeout).

%% @doc `enter_loop/3' with a registered name and a timeout.
-spec enter_loop(module(), list(), term(), term(), term()) -> no_return().
enter_loop(Mod, Opts, State, Name, Timeout) ->
    gen_server:enter_loop(Mod, partisan_gen:strip_opts(Opts), State, Name, Timeout).

%% @private
wake_hib(Parent, Name, State, Mod, HibernateAfter, Debug) ->
    gen_server:wake_hib(Parent, Name, State, Mod, HibernateAfter, Debug).
%% @private
system_continue(Parent, Debug, Misc) -> gen_server:system_continue(Parent, Debug, Misc).
%% @private
system_terminate(Reason, Parent, Debug, Misc) -> gen_server:system_terminate(Reason, Parent, Debug, Misc).
%% @private
system_code_change(Misc, Module, OldVsn, Extra) -> gen_server:system_code_change(Misc, Module, OldVsn, Extra).
%% @private
system_get_state(Misc) -> gen_server:system_get_state(Misc).
%% @private
system_replace_state(StateFun, Misc) -> gen_server:system_replace_state(StateFun, Misc).
%% @private
format_log(Report) -> gen_server:format_log(Report).
%% @private
format_log(Report, FormatOpts) -> gen_server:format_log(Report, FormatOpts).
%% @private
init_it(Starter, Parent, Name, Mod, Args, Opts) -> gen_server:init_it(Starter, Parent, Name, Mod, Args, Opts).
