%% @doc `erpc' over the Partisan data plane (never Distributed Erlang), with Partisan v5's API.
%%
%% A request runs `M:F(A)' (or a fun) in a new process on the target node, spawned and watched by
%% that node's call relay (`partisan_call_relay'); the outcome comes back in one message. Results
%% and exceptions are OTP's `erpc' ones: the value; `throw(Value)'; `exit({exception, Reason})';
%% `error({exception, Reason, Stacktrace})'; `exit({signal, Reason})' when the process was
%% killed; `error({erpc, noconnection})' when the node is not reachable or is lost while the
%% request runs (see `partisan_monitor'); `error({erpc, timeout})'; `error({erpc, badarg})' for
%% bad arguments. A process that outlives its caller's timeout finishes on its own; its late
%% result is dropped. The timeout argument may also be options `[{timeout, T}, {channel, C}]'.
%%
%% ```
%% 3 = partisan_erpc:call('b@127.0.0.1', erlang, length, [[a, b, c]], 1000),
%% [{ok, _}, {error, {erpc, noconnection}}] = partisan_erpc:multicall([B, Down], erlang, node, []).
%% '''
-module(partisan_erpc).

-export([call/2, call/3, call/4, call/5, cast/2, cast/4, send_request/2, send_request/4,
         receive_response/1, receive_response/2, wait_response/1, wait_response/2,
         check_response/2, multicall/2, multicall/3, multicall/4, multicall/5, multicast/2,
         multicast/4, execute_call/3, execute_call/4, execute_cast/3, is_arg_error/4,
         trim_stack/4, call_result/4]).

%% A request to another node (ours), or to this one (OTP's erpc, which needs no distribution).
-opaque request_id() :: {partisan, partisan_gen:request_id()} | {otp, erpc:request_id()}.
-type timeout_opts() :: timeout() | [{timeout, timeout()} | {channel, atom()}] | map().
-export_type([request_id/0]).

%% @doc Evaluates `Fun()' on `Node' and returns its value (no timeout).
-spec call(node(), fun(() -> term())) -> term().
call(Node, Fun) -> call(Node, Fun, infinity).

%% @doc Evaluates `Fun()' on `Node' within `Timeout'.
-spec call(node(), fun(() -> term()), timeout_opts()) -> term().
call(Node, Fun, Timeout) when is_function(Fun, 0) -> call(Node, erlang, apply, [Fun, []], Timeout);
call(_, _, _) -> error({erpc, badarg}).

%% @doc Evaluates `M:F(A)' on `Node' and returns its value (no timeout).
-spec call(node(), module(), atom(), [term()]) -> term().
call(Node, M, F, A) -> call(Node, M, F, A, infinity).

%% @doc Evaluates `M:F(A)' on `Node' within `Timeout'.
-spec call(node(), module(), atom(), [term()], timeout_opts()) -> term().
call(Node, M, F, A, Timeout) ->
    check(Node, M, F, A),
    result(run(Node, M, F, A, Timeout)).

%% @doc Evaluates `Fun()' on `Node' without waiting for its outcome.
-spec cast(node(), fun(() -> term())) -> ok.
cast(Node, Fun) when is_function(Fun, 0) -> cast(Node, erlang, apply, [Fun, []]);
cast(_, _) -> error({erpc, badarg}).

%% @doc Evaluates `M:F(A)' on `Node' without waiting for its outcome. Always `ok' (a node that
%% cannot be reached is not an error, as in `erpc').
-spec cast(node(), module(), atom(), [term()]) -> ok.
cast(Node, M, F, A) ->
    check(Node, M, F, A),
    case Node =:= partisan:node() of
        true -> erpc:cast(node(), M, F, A);
        false -> _ = partisan_gen:cast_apply(Node, M, F, A), ok
    end.

%% @doc Starts evaluating `Fun()' on `Node'; collect the outcome with `receive_response/1,2',
%% `wait_response/1,2' or `check_response/2'.
-spec send_request(node(), fun(() -> term())) -> request_id().
send_request(Node, Fun) when is_function(Fun, 0) -> send_request(Node, erlang, apply, [Fun, []]);
send_request(_, _) -> error({erpc, badarg}).

%% @doc Starts evaluating `M:F(A)' on `Node'.
-spec send_request(node(), module(), atom(), [term()]) -> request_id().
send_request(Node, M, F, A) ->
    request(Node, M, F, A, undefined).

%% @doc The outcome of a request, waiting as long as it takes.
-spec receive_response(request_id()) -> term().
receive_response(ReqId) -> receive_response(ReqId, infinity).

%% @doc The outcome of a request within `Timeout'; `error({erpc, timeout})' abandons it.
-spec receive_response(request_id(), timeout()) -> term().
receive_response({partisan, Id}, Timeout) ->
    result(response(partisan_gen:receive_response(Id, Timeout)));
receive_response({otp, ReqId}, Timeout) ->
    erpc:receive_response(ReqId, Timeout).

%% @doc `{response, Result}' when the outcome arrives, waiting as long as it takes.
-spec wait_response(request_id()) -> {response, term()}.
wait_response(ReqId) -> wait_response(ReqId, infinity).

%% @doc `{response, Result}', or `no_response' after `Timeout' (the request stays active).
-spec wait_response(request_id(), timeout()) -> {response, term()} | no_response.
wait_response({partisan, Id}, Timeout) ->
    case partisan_gen:wait_response(Id, Timeout) of
        timeout -> no_response;
        Other -> {response, result(response(Other))}
    end;
wait_response({otp, ReqId}, Timeout) ->
    erpc:wait_response(ReqId, Timeout).

%% @doc `{response, Result}' if `Msg' is the outcome of the request, else `no_response'.
-spec check_response(term(), request_id()) -> {response, term()} | no_response.
check_response(Msg, {partisan, Id}) ->
    case partisan_gen:check_response(Msg, Id) of
        no_reply -> no_response;
        Other -> {response, result(response(Other))}
    end;
check_response(Msg, {otp, ReqId}) ->
    erpc:check_response(Msg, ReqId).

%% @doc Evaluates `Fun()' on every node of `Nodes' in parallel (no timeout).
-spec multicall([node()], fun(() -> term())) -> [{ok, term()} | {atom(), term()}].
multicall(Nodes, Fun) -> multicall(Nodes, Fun, infinity).

%% @doc Evaluates `Fun()' on every node of `Nodes' in parallel within `Timeout'.
-spec multicall([node()], fun(() -> term()), timeout_opts()) -> [{ok, term()} | {atom(), term()}].
multicall(Nodes, Fun, Timeout) when is_function(Fun, 0) -> multicall(Nodes, erlang, apply, [Fun, []], Timeout);
multicall(_, _, _) -> error({erpc, badarg}).

%% @doc Evaluates `M:F(A)' on every node of `Nodes' in parallel (no timeout).
-spec multicall([node()], module(), atom(), [term()]) -> [{ok, term()} | {atom(), term()}].
multicall(Nodes, M, F, A) -> multicall(Nodes, M, F, A, infinity).

%% @doc Evaluates `M:F(A)' on every node of `Nodes' in parallel within `Timeout' (one deadline
%% for all). One result per node, in the order of `Nodes': `{ok, Value}', `{throw, Value}',
%% `{exit, {exception, Reason}}', `{error, {exception, Reason, Stack}}',
%% `{exit, {signal, Reason}}' or `{error, {erpc, Reason}}'.
-spec multicall([node()], module(), atom(), [term()], timeout_opts()) -> [{ok, term()} | {atom(), term()}].
multicall(Nodes, M, F, A, Timeout) when is_list(Nodes) ->
    {Ms, Channel} = timeout_opts(Timeout),
    Deadline = case Ms of infinity -> infinity; _ -> erlang:monotonic_time(millisecond) + Ms end,
    Requests = [request(N, M, F, A, Channel) || N <- Nodes],
    [collect(R, Deadline) || R <- Requests];
multicall(_, _, _, _, _) ->
    error({erpc, badarg}).

request(Node, M, F, A, Channel) ->
    check(Node, M, F, A),
    case Node =:= partisan:node() of
        true -> {otp, erpc:send_request(node(), M, F, A)};
        false -> {partisan, partisan_gen:send_apply(Node, M, F, A, [{channel, Channel}])}
    end.

collect(Req, Deadline) ->
    Left = case Deadline of infinity -> infinity; _ -> max(0, Deadline - erlang:monotonic_time(millisecond)) end,
    try {ok, receive_response(Req, Left)}
    catch
        throw:Value -> {throw, Value};
        Class:Reason -> {Class, Reason}
    end.

%% @doc Evaluates `Fun()' on every node of `Nodes' without waiting. Always `ok'.
-spec multicast([node()], fun(() -> term())) -> ok.
multicast(Nodes, Fun) -> [cast(N, Fun) || N <- Nodes], ok.

%% @doc Evaluates `M:F(A)' on every node of `Nodes' without waiting. Always `ok'.
-spec multicast([node()], module(), atom(), [term()]) -> ok.
multicast(Nodes, M, F, A) -> [cast(N, M, F, A) || N <- Nodes], ok.

%% @doc OTP 25's `erpc:execute_call/3' (the body of a request whose caller handles exceptions):
%% `{return, M:F(A)}'; exceptions propagate. Requests over Partisan run in the target node's call
%% relay (`partisan_call_relay'), not through this function; it is kept for v5's API.
-spec execute_call(module(), atom(), [term()]) -> {return, term()}.
execute_call(M, F, A) -> erpc:execute_call(M, F, A).

%% @doc OTP 25's `erpc:execute_call/4': evaluates `M:F(A)' and exits with the outcome tagged
%% with `Ref' (`{Ref, return, Value}', `{Ref, throw, Value}', `{Ref, exit, Reason}',
%% `{Ref, error, Reason, Stack}' or `{Ref, error, {erpc, Reason}}'), the body of a process
%% `spawn_request'ed by erpc.
-spec execute_call(reference(), module(), atom(), [term()]) -> no_return().
execute_call(Ref, M, F, A) -> erpc:execute_call(Ref, M, F, A).

%% @doc OTP 25's `erpc:execute_cast/3': evaluates `M:F(A)'; an error is raised again as erpc's
%% `{exception, {Reason, Stack}}' (or `{erpc, Reason}' for an argument error).
-spec execute_cast(module(), atom(), [term()]) -> term().
execute_cast(M, F, A) -> erpc:execute_cast(M, F, A).

%% @doc OTP 25's `erpc:is_arg_error/4': whether the error `Reason' of `M:F(A)' comes from its
%% arguments themselves (a `system_limit' from too many), not from the code run.
-spec is_arg_error(term(), module(), atom(), [term()]) -> boolean().
is_arg_error(Reason, M, F, A) -> erpc:is_arg_error(Reason, M, F, A).

%% @doc OTP 25's `erpc:trim_stack/4': `Stack' cut below the frames of `M:F(A)', as erpc reports
%% the stack of a remote exception.
-spec trim_stack(list(), module(), atom(), [term()]) -> list().
trim_stack(Stack, M, F, A) -> erpc:trim_stack(Stack, M, F, A).

%% @doc OTP 25's `erpc:call_result/4': the value, or the exception erpc raises, for the outcome
%% `Reason' of a request (`Type' `down', `spawn_reply' or `timeout'; `Res' the request's tag).
%% The same results and exceptions as this module's calls.
-spec call_result(down | spawn_reply | timeout, term(), term(), term()) -> term().
call_result(Type, ReqId, Res, Reason) -> erpc:call_result(Type, ReqId, Res, Reason).

%% -- internal ------------------------------------------------------------------

run(Node, M, F, A, Timeout) ->
    case Node =:= partisan:node() of
        true -> {local, erpc:call(node(), M, F, A, element(1, timeout_opts(Timeout)))};
        false -> partisan_gen:remote_apply(Node, M, F, A, Timeout)
    end.

%% An outcome of partisan_gen:remote_apply/5 as erpc returns or raises it.
result({local, Value}) -> Value;
result({ok, Value}) -> Value;
result({throw, Value, _}) -> throw(Value);
result({exit, Reason, _}) -> exit({exception, Reason});
result({error, Reason, Stack}) -> error({exception, Reason, Stack});
result({down, noconnection}) -> error({erpc, noconnection});
result({down, Reason}) -> exit({signal, Reason});
result(timeout) -> error({erpc, timeout});
result({error, not_connected}) -> error({erpc, noconnection});
result({error, not_started}) -> error({erpc, noconnection});
result({error, Reason}) -> error({erpc, Reason}).

%% A response of partisan_gen's request functions as an outcome of remote_apply/5.
response({reply, Outcome}) -> Outcome;
response({error, {noconnection, _}}) -> {down, noconnection};
response({error, {Reason, _}}) -> {down, Reason};
response(timeout) -> timeout.

timeout_opts(Timeout) ->
    try partisan_gen:call_opts(Timeout, infinity)
    catch error:_ -> error({erpc, badarg})
    end.

check(Node, M, F, A) ->
    is_atom(Node) andalso is_atom(M) andalso is_atom(F) andalso is_list(A) orelse error({erpc, badarg}).
