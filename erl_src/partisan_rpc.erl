%% @doc `rpc' over the Partisan data plane, with Partisan v5's API (`call/4,5',
%% `prepare_opts/1'), plus `cast/4' and `multicall/4,5'.
%%
%% As OTP's `rpc' since OTP 23, this is `partisan_erpc' with its outcomes translated: the value
%% (a thrown value is returned as the value), or `{badrpc, Reason}' with `Reason' one of
%% `nodedown', `timeout', `{'EXIT', {Error, Stack}}' (an error), `{'EXIT', Reason}' (an exit or
%% a killed process).
-module(partisan_rpc).

-export([call/4, call/5, cast/4, multicall/4, multicall/5, prepare_opts/1]).

-define(DEFAULT_TIMEOUT, infinity).

%% @doc Evaluates `M:F(A)' on `Node' and waits for the result (no timeout).
-spec call(node(), module(), atom(), [term()]) -> term() | {badrpc, term()}.
call(Node, M, F, A) -> call(Node, M, F, A, ?DEFAULT_TIMEOUT).

%% @doc Evaluates `M:F(A)' on `Node'; the last argument is a timeout or options
%% (`timeout', `channel').
-spec call(node(), module(), atom(), [term()], timeout() | list() | map()) -> term() | {badrpc, term()}.
call(Node, M, F, A, Timeout) when is_list(Timeout); is_map(Timeout) ->
    Opts = prepare_opts(Timeout),
    badrpc(fun() -> partisan_erpc:call(Node, M, F, A, maps:to_list(Opts)) end);
call(Node, M, F, A, Timeout) ->
    badrpc(fun() -> partisan_erpc:call(Node, M, F, A, Timeout) end).

%% @doc Evaluates `M:F(A)' on `Node' without waiting. Always `true'.
-spec cast(node(), module(), atom(), [term()]) -> true.
cast(Node, M, F, A) ->
    _ = catch partisan_erpc:cast(Node, M, F, A),
    true.

%% @doc Evaluates `M:F(A)' on every node of `Nodes': `{Results, BadNodes}' (no timeout).
-spec multicall([node()], module(), atom(), [term()]) -> {[term()], [node()]}.
multicall(Nodes, M, F, A) -> multicall(Nodes, M, F, A, ?DEFAULT_TIMEOUT).

%% @doc Evaluates `M:F(A)' on every node of `Nodes' within `Timeout': the results of the nodes
%% that answered and the nodes that did not (down or timed out).
-spec multicall([node()], module(), atom(), [term()], timeout()) -> {[term()], [node()]}.
multicall(Nodes, M, F, A, Timeout) ->
    Results = partisan_erpc:multicall(Nodes, M, F, A, Timeout),
    lists:foldr(fun({_, {ok, V}}, {Good, Bad}) -> {[V | Good], Bad};
                   ({_, {throw, V}}, {Good, Bad}) -> {[V | Good], Bad};
                   ({Node, {error, {erpc, _}}}, {Good, Bad}) -> {Good, [Node | Bad]};
                   ({_, {Class, Reason}}, {Good, Bad}) -> {[exit_reason(Class, Reason) | Good], Bad}
                end, {[], []}, lists:zip(Nodes, Results)).

%% @doc Call options as a map with the channel filled in (`undefined', the default channel,
%% when absent).
-spec prepare_opts(list() | map()) -> map().
prepare_opts(Opts) when is_list(Opts) -> prepare_opts(maps:from_list(Opts));
prepare_opts(#{channel := _} = Opts) -> Opts;
prepare_opts(Opts) when is_map(Opts) -> Opts#{channel => undefined}.

badrpc(Fun) ->
    try Fun()
    catch
        throw:Value -> Value;
        error:{erpc, noconnection} -> {badrpc, nodedown};
        error:{erpc, timeout} -> {badrpc, timeout};
        error:{erpc, badarg} -> error(badarg);
        error:{erpc, Reason} -> {badrpc, {'EXIT', Reason}};
        Class:Reason -> exit_reason(Class, Reason)
    end.

exit_reason(error, {exception, Reason, Stack}) -> {badrpc, {'EXIT', {Reason, Stack}}};
exit_reason(exit, {exception, Reason}) -> {badrpc, {'EXIT', Reason}};
exit_reason(exit, {signal, Reason}) -> {badrpc, {'EXIT', Reason}};
exit_reason(_, Reason) -> {badrpc, {'EXIT', Reason}}.
