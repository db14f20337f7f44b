%% @doc Calls to OTP servers on any Partisan node: the caller side of `partisan_gen_server',
%% `partisan_gen_statem', `partisan_gen_event', `partisan_sys' and friends.
%%
%% A server on this node is called with OTP's own `gen' module. A server on another node costs
%% one round trip: the caller registers with the data plane as waiting for an answer from that
%% node (`partisan_nif:await_reply/2'), sends one message to a call relay there
%% (`partisan_call_relay'), which hands the server an OTP `From' and returns the answer, or the
%% server's exit reason. The outcome is what `gen:call/4' gives over Distributed Erlang:
%% `{ok, Reply}', or an exit with `noproc', the server's exit reason, `{nodedown, Node}' (the node
%% is lost; see `partisan_monitor') or `timeout'. A reply that arrives after a timeout is dropped
%% by the data plane, never left in the caller's mailbox.
%%
%% Options (the last argument of `call/4' and friends) are a timeout or a list/map with
%% `timeout' and `channel' (the channel the request and its answer travel on).
-module(partisan_gen).

-export([call/3, call/4, send_request/3, send_request/4, wait_response/2, receive_response/2,
         check_response/2, reply/2, stop/1, stop/3, start/5, start/6, remote_apply/5, cast_apply/4,
         server_apply/5, node_apply/5, apply_local/4, send_apply/5, call_opts/2, strip_opts/1]).

-define(DEFAULT_TIMEOUT, 5000).
%% How long a sender backs off when the connection's queue is full, as a busy distribution port
%% suspends the sender in Distributed Erlang.
-define(BUSY_RETRY_MS, 1).

-record(request, {tag :: reference(), id :: non_neg_integer(), node :: node(),
                  server :: term()}).
-opaque request_id() :: #request{} | gen:request_id().
-type call_opts() :: timeout() | [{timeout, timeout()} | {channel, atom()}]
                   | #{timeout => timeout(), channel => atom()}.
-export_type([request_id/0, call_opts/0]).

%% @doc `call/4' with the default timeout (5 s).
-spec call(partisan_otp:server_ref(), term(), term()) -> {ok, term()}.
call(Server, Label, Request) ->
    call(Server, Label, Request, ?DEFAULT_TIMEOUT).

%% @doc Sends `{Label, From, Request}' to `Server' and waits for its reply, as `gen:call/4' does.
-spec call(partisan_otp:server_ref(), term(), term(), call_opts()) -> {ok, term()}.
call(Server, Label, Request, Opts) ->
    {Timeout, Channel} = call_opts(Opts, ?DEFAULT_TIMEOUT),
    case partisan_otp:resolve(Server) of
        {local, Proc} -> gen:call(Proc, Label, Request, Timeout);
        {remote, Node, Dest} -> remote_call(Node, Dest, Label, Request, Timeout, Channel);
        undefined -> exit(noproc)
    end.

remote_call(Node, Dest, Label, Request, Timeout, Channel) ->
    Tag = erlang:make_ref(),
    Id = send_call(Node, Dest, Label, Request, Timeout, Channel, Tag),
    %% The reply, or a DOWN from the server's relay (server exit) or from the data plane (node lost).
    receive
        {Tag, Reply} ->
            {ok, Reply};
        {'DOWN', Tag, _, _, noconnection} ->
            exit({nodedown, Node});
        {'DOWN', Tag, _, _, Reason} ->
            exit(Reason)
    after Timeout ->
        case partisan_nif:cancel_reply(Id) of
            true -> exit(timeout);
            %% The answer was already handed to this mailbox: take it.
            false -> receive
                         {Tag, Reply} -> {ok, Reply};
                         {'DOWN', Tag, _, _, noconnection} -> exit({nodedown, Node});
                         {'DOWN', Tag, _, _, Reason} -> exit(Reason)
                     end
        end
    end.

%% Registers the wait and sends the request; exits as gen:call would when it cannot be sent.
send_call(Node, Dest, Label, Request, Timeout, Channel, Tag) ->
    Id = case partisan_nif:await_reply(Node, Tag) of
        {ok, I} -> I;
        {error, not_started} -> exit({nodedown, Node})
    end,
    Msg = {'$partisan_call', self(), partisan:node(), Id, Tag, Channel, Timeout, Label, Dest, Request},
    Deadline = deadline(Timeout),
    case send_to_relay(Node, Msg, Channel, Deadline) of
        ok ->
            Id;
        {error, Reason} ->
            _ = partisan_nif:cancel_reply(Id),
            exit(send_failure(Reason, Node))
    end.

send_to_relay(Node, Msg, Channel, Deadline) ->
    case partisan_otp:send(Node, partisan_otp:relay_for(self()), Msg, #{channel => Channel}) of
        {error, queue_full} ->
            case erlang:monotonic_time(millisecond) < Deadline of
                true -> receive after ?BUSY_RETRY_MS -> send_to_relay(Node, Msg, Channel, Deadline) end;
                false -> {error, timeout}
            end;
        Result ->
            Result
    end.

send_failure(not_connected, Node) -> {nodedown, Node};
send_failure(not_started, Node) -> {nodedown, Node};
send_failure(timeout, _) -> timeout;
send_failure(Reason, _) -> Reason.

deadline(infinity) -> infinity;
deadline(Ms) -> erlang:monotonic_time(millisecond) + Ms.

%% @doc Sends a request without waiting (`gen:send_request/3'): collect the answer with
%% `receive_response/2', `wait_response/2' or `check_response/2'.
-spec send_request(partisan_otp:server_ref(), term(), term()) -> request_id().
send_request(Server, Label, Request) ->
    send_request(Server, Label, Request, []).

%% @doc `send_request/3' with options (`channel').
-spec send_request(partisan_otp:server_ref(), term(), term(), call_opts()) -> request_id().
send_request(Server, Label, Request, Opts) ->
    {_, Channel} = call_opts(Opts, infinity),
    case partisan_otp:resolve(Server) of
        {local, Proc} ->
            gen:send_request(Proc, Label, Request);
        {remote, Node, Dest} ->
            Tag = erlang:make_ref(),
            try send_call(Node, Dest, Label, Request, infinity, Channel, Tag) of
                Id -> #request{tag = Tag, id = Id, node = Node, server = Server}
            catch exit:Reason ->
                %% Answer as a request whose server went down at once.
                failed_request(Tag, Server, down_reason(Reason))
            end;
        undefined ->
            failed_request(erlang:make_ref(), Server, noproc)
    end.

down_reason({nodedown, _}) -> noconnection;
down_reason(Reason) -> Reason.

%% @doc Waits up to `Timeout' for the answer to a request and abandons it on timeout:
%% `{reply, Reply}', `{error, {Reason, Server}}' or `timeout'.
-spec receive_response(request_id(), timeout()) -> {reply, term()} | {error, {term(), term()}} | timeout.
receive_response(#request{tag = Tag, id = Id, server = Server}, Timeout) ->
    receive
        {Tag, Reply} -> {reply, Reply};
        {'DOWN', Tag, _, _, Reason} -> {error, {Reason, Server}}
    after Timeout ->
        case partisan_nif:cancel_reply(Id) of
            true -> timeout;
            false -> receive_response(#request{tag = Tag, id = Id, server = Server}, infinity)
        end
    end;
receive_response(ReqId, Timeout) ->
    gen:receive_response(ReqId, Timeout).

%% @doc Waits up to `Timeout' for the answer to a request; on timeout the request stays active.
-spec wait_response(request_id(), timeout()) -> {reply, term()} | {error, {term(), term()}} | timeout.
wait_response(#request{tag = Tag, server = Server}, Timeout) ->
    receive
        {Tag, Reply} -> {reply, Reply};
        {'DOWN', Tag, _, _, Reason} -> {error, {Reason, Server}}
    after Timeout ->
        timeout
    end;
wait_response(ReqId, Timeout) ->
    gen:wait_response(ReqId, Timeout).

%% @doc Whether `Msg' answers the request: `{reply, Reply}', `{error, {Reason, Server}}' or
%% `no_reply'.
-spec check_response(term(), request_id()) -> {reply, term()} | {error, {term(), term()}} | no_reply.
check_response({Tag, Reply}, #request{tag = Tag}) ->
    {reply, Reply};
check_response({'DOWN', Tag, _, _, Reason}, #request{tag = Tag, server = Server}) ->
    {error, {Reason, Server}};
check_response(_, #request{}) ->
    no_reply;
check_response(Msg, ReqId) ->
    gen:check_response(Msg, ReqId).

%% @doc Answers a call (`gen:reply/2'), also when the `From' came from a server on another node
%% (its alias lives there: the answer goes to that node's relay).
-spec reply({term(), term()}, term()) -> ok.
reply({_, [alias | Alias]} = From, Reply) when is_reference(Alias) ->
    reply_via_alias(Alias, From, Reply);
reply({_, [[alias | Alias] | _]} = From, Reply) when is_reference(Alias) ->
    reply_via_alias(Alias, From, Reply);
reply(From, Reply) ->
    gen:reply(From, Reply).

reply_via_alias(Alias, {_, Tag} = From, Reply) ->
    case node(Alias) =:= node() of
        true ->
            gen:reply(From, Reply);
        false ->
            Relay = partisan_otp:relay_for(self()),
            _ = partisan_otp:send(node(Alias), Relay, {'$partisan_alias_reply', Alias, {Tag, Reply}}, #{}),
            ok
    end.

%% @doc Stops a server with reason `normal' (`gen:stop/1').
-spec stop(partisan_otp:server_ref()) -> ok.
stop(Server) ->
    stop(Server, normal, infinity).

%% @doc Stops a server, on this node or another, and waits for it to terminate (`gen:stop/3').
-spec stop(partisan_otp:server_ref(), term(), timeout()) -> ok.
stop(Server, Reason, Timeout) ->
    server_apply(Server, gen, stop, [Reason, Timeout], infinity).

%% @doc Calls `M:F(Server, Args...)' where `Server' lives: here, or on its node through a relay
%% worker. Returns what the function returns there and raises what it raises there (an exit
%% `{nodedown, Node}' when the node is lost, `noproc' for a name not registered there). How OTP
%% functions that take a server reference (`sys', `supervisor', `gen_event') work on remote
%% servers without knowing their protocols.
-spec server_apply(partisan_otp:server_ref(), module(), atom(), [term()], timeout()) -> term().
server_apply(Server, M, F, Args, Timeout) ->
    case partisan_otp:resolve(Server) of
        {local, Proc} -> erlang:apply(M, F, [Proc | Args]);
        {remote, Node, Dest} -> node_apply(Node, ?MODULE, apply_local, [Dest, M, F, Args], Timeout);
        undefined -> exit(noproc)
    end.

%% @private Runs on the server's node for `server_apply/5'.
-spec apply_local(partisan_nif:dest(), module(), atom(), [term()]) -> term().
apply_local(Dest, M, F, Args) ->
    case partisan_otp:local(Dest) of
        {ok, Proc} -> erlang:apply(M, F, [Proc | Args]);
        error -> exit(noproc)
    end.

%% @doc Starts a generic process as `gen:start/5' does; the Partisan option `{channel, C}' is
%% accepted and removed (answers travel on the channel of each call).
-spec start(module(), link | nolink | monitor, module(), term(), list()) -> term().
start(GenMod, LinkP, Mod, Args, Opts) ->
    gen:start(GenMod, LinkP, Mod, Args, strip_opts(Opts)).

%% @doc `start/5' with a name.
-spec start(module(), link | nolink | monitor, term(), module(), term(), list()) -> term().
start(GenMod, LinkP, Name, Mod, Args, Opts) ->
    gen:start(GenMod, LinkP, Name, Mod, Args, strip_opts(Opts)).

%% @doc Runs `M:F(A)' on `Node' and returns `{ok, Value}', `{Class, Reason, Stacktrace}' for an
%% exception, or `{down, Reason}' when the worker was killed or the node lost (`noconnection'),
%% `timeout', or `{error, Reason}' when the request could not be sent.
-spec remote_apply(node(), module(), atom(), [term()], call_opts()) ->
    {ok, term()} | {error | exit | throw, term(), list()} | {down, term()} | timeout | {error, term()}.
remote_apply(Node, M, F, A, Opts) ->
    {Timeout, Channel} = call_opts(Opts, infinity),
    Tag = erlang:make_ref(),
    case partisan_nif:await_reply(Node, Tag) of
        {ok, Id} ->
            Msg = {'$partisan_apply', partisan:node(), Id, Tag, Channel, Timeout, M, F, A},
            case send_to_relay(Node, Msg, Channel, deadline(Timeout)) of
                ok ->
                    receive
                        {Tag, Result} -> Result;
                        {'DOWN', Tag, _, _, Reason} -> {down, Reason}
                    after Timeout ->
                        case partisan_nif:cancel_reply(Id) of
                            true -> timeout;
                            false -> receive
                                         {Tag, Result} -> Result;
                                         {'DOWN', Tag, _, _, Reason} -> {down, Reason}
                                     end
                        end
                    end;
                {error, Reason} ->
                    _ = partisan_nif:cancel_reply(Id),
                    {error, Reason}
            end;
        {error, Reason} ->
            {error, Reason}
    end.

%% @doc Starts running `M:F(A)' on `Node' without waiting: the outcome arrives as the reply of
%% the request (`{reply, Outcome}' from `receive_response/2' and friends, with `Outcome' as in
%% `remote_apply/5'), or `{error, {Reason, Node}}' when the worker was killed or the node lost.
-spec send_apply(node(), module(), atom(), [term()], call_opts()) -> request_id().
send_apply(Node, M, F, A, Opts) ->
    {_, Channel} = call_opts(Opts, infinity),
    Tag = erlang:make_ref(),
    case partisan_nif:await_reply(Node, Tag) of
        {ok, Id} ->
            Msg = {'$partisan_apply', partisan:node(), Id, Tag, Channel, infinity, M, F, A},
            case send_to_relay(Node, Msg, Channel, infinity) of
                ok ->
                    #request{tag = Tag, id = Id, node = Node, server = Node};
                {error, Reason} ->
                    _ = partisan_nif:cancel_reply(Id),
                    failed_request(Tag, Node, down_reason(send_failure(Reason, Node)))
            end;
        {error, _} ->
            failed_request(Tag, Node, noconnection)
    end.

%% A request that failed before it left: its DOWN is already in the mailbox.
failed_request(Tag, Server, Reason) ->
    self() ! {'DOWN', Tag, process, Server, Reason},
    #request{tag = Tag, id = 0, node = partisan:node(), server = Server}.

%% @doc Runs `M:F(A)' on `Node' without waiting for (or learning) the outcome.
-spec cast_apply(node(), module(), atom(), [term()]) -> ok | {error, term()}.
cast_apply(Node, M, F, A) ->
    partisan_otp:send(Node, partisan_otp:relay_for(self()), {'$partisan_cast', M, F, A}, #{}).

%% @doc Runs `M:F(A)' on `Node' and returns what it returns there, or raises what it raises there;
%% raises `{nodedown, Node}' when the node is lost and `timeout' after `Timeout'.
-spec node_apply(node(), module(), atom(), [term()], timeout()) -> term().
node_apply(Node, M, F, A, Timeout) ->
    case remote_apply(Node, M, F, A, Timeout) of
        {ok, Value} -> Value;
        {exit, Reason, _} -> exit(Reason);
        {error, Reason, Stack} -> erlang:raise(error, Reason, Stack);
        {throw, Value, _} -> throw(Value);
        {down, noconnection} -> exit({nodedown, Node});
        {down, Reason} -> exit(Reason);
        timeout -> exit(timeout);
        {error, Reason} -> exit(send_failure(Reason, Node))
    end.

%% @doc The timeout and channel of call options (a timeout, or a list or map of `timeout' and
%% `channel'), with `Default' as the timeout when none is given.
-spec call_opts(call_opts(), timeout()) -> {timeout(), atom()}.
call_opts(Timeout, _) when Timeout =:= infinity; is_integer(Timeout), Timeout >= 0 ->
    {Timeout, undefined};
call_opts(Opts, Default) when is_list(Opts); is_map(Opts) ->
    Get = fun(K, D) when is_map(Opts) -> maps:get(K, Opts, D);
             (K, D) -> proplists:get_value(K, Opts, D)
          end,
    case Get(timeout, Default) of
        T when T =:= infinity; is_integer(T), T >= 0 -> {T, Get(channel, undefined)};
        T -> error({badarg, {timeout, T}})
    end;
call_opts(Other, _) ->
    error({badarg, Other}).

%% @doc Start options without Partisan's own (`channel').
-spec strip_opts(list()) -> list().
strip_opts(Opts) ->
    [O || O <- Opts, not (is_tuple(O) andalso element(1, O) =:= channel)].
