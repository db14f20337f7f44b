%% @doc Interposition (Partisan v5's fault-injection hooks) and the `ingress_delay' /
%% `egress_delay' keys: funs that see, and may drop, delay, duplicate or rewrite, the messages
%% this node sends and receives.
%%
%% Three kinds of fun, each installed under a name (installing a name again replaces it):
%% <ul>
%% <li>pre-interposition: `fun({forward_message | receive_message, Node, Msg}) -> _', run first,
%%     for its side effects (its result is ignored; it may block, which holds that message);</li>
%% <li>interposition: `fun({forward_message | receive_message, Node, Msg}) -> Result', folded in
%%     name order over the message. `Result' is the message to pass on (the same, or rewritten),
%%     `undefined' (drop it), `{'$delay', Msg2}' (put it back behind what is queued, as v5 does),
%%     `{'$delay', Ms, Msg2}' (hold it `Ms' milliseconds) or `{'$duplicate', N, Msg2}' (pass `N'
%%     copies). A delayed message goes through every fun again when its time comes;</li>
%% <li>post-interposition: `fun({forward_message | receive_message, Node, Msg, Result}) -> _',
%%     run last with the original message and the interposition result.</li>
%% </ul>
%% `Node' is the destination of a send and the sender of a received message. A fun that raises is
%% logged and passes the message on unchanged.
%%
%% Cost when nothing is installed: a send reads one `persistent_term' flag; the data plane reads
%% one atomic flag per received message and delivers as usual. While a fun or `ingress_delay' is
%% set, received messages (all but answers to calls) go through this process, which runs the
%% funs and delivers; sends run the funs in the sending process.
-module(partisan_interposition).
-behaviour(gen_server).

-export([start_link/0, stats/0]).
-export([add_pre_interposition_fun/2, add_interposition_fun/2, add_post_interposition_fun/2,
         remove_pre_interposition_fun/1, remove_interposition_fun/1,
         remove_post_interposition_fun/1, get_pre_interposition_funs/0,
         get_interposition_funs/0, get_post_interposition_funs/0]).
-export([send_hooks/0, forward/4]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-include_lib("kernel/include/logger.hrl").

%% The send path's flag: `true' while a fun or `egress_delay' needs the sending process to stop
%% here. Read on every remote send.
-define(SEND_HOOKS, partisan_interposition_send_hooks).
-define(FUNS, {?MODULE, funs}).
-define(COUNTERS, {?MODULE, counters}).
-define(COUNTER_NAMES, [dropped, delayed, duplicated, rewritten, fun_errors]).

-type kind() :: pre | mid | post.
-type direction() :: forward_message | receive_message.

-record(state, {ingress_delay :: non_neg_integer(),
                %% Received messages held by `ingress_delay', oldest first.
                held = queue:new() :: queue:queue({integer(), node(), pid(), term()}),
                timer :: reference() | undefined}).

%% @doc Starts the interposition process (registered as `partisan_interposition').
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Installs a pre-interposition fun under `Name' (v5).
-spec add_pre_interposition_fun(term(), fun((tuple()) -> term())) -> ok | {error, term()}.
add_pre_interposition_fun(Name, Fun) -> add(pre, Name, Fun).

%% @doc Installs an interposition fun under `Name' (v5).
-spec add_interposition_fun(term(), fun((tuple()) -> term())) -> ok | {error, term()}.
add_interposition_fun(Name, Fun) -> add(mid, Name, Fun).

%% @doc Installs a post-interposition fun under `Name' (v5).
-spec add_post_interposition_fun(term(), fun((tuple()) -> term())) -> ok | {error, term()}.
add_post_interposition_fun(Name, Fun) -> add(post, Name, Fun).

%% @doc Removes the pre-interposition fun `Name' (`ok' if there is none).
-spec remove_pre_interposition_fun(term()) -> ok | {error, term()}.
remove_pre_interposition_fun(Name) -> call({remove, pre, Name}).

%% @doc Removes the interposition fun `Name' (`ok' if there is none).
-spec remove_interposition_fun(term()) -> ok | {error, term()}.
remove_interposition_fun(Name) -> call({remove, mid, Name}).

%% @doc Removes the post-interposition fun `Name' (`ok' if there is none).
-spec remove_post_interposition_fun(term()) -> ok | {error, term()}.
remove_post_interposition_fun(Name) -> call({remove, post, Name}).

%% @doc The installed pre-interposition funs, by name.
-spec get_pre_interposition_funs() -> {ok, #{term() => function()}}.
get_pre_interposition_funs() -> {ok, kind(pre)}.

%% @doc The installed interposition funs, by name.
-spec get_interposition_funs() -> {ok, #{term() => function()}}.
get_interposition_funs() -> {ok, kind(mid)}.

%% @doc The installed post-interposition funs, by name.
-spec get_post_interposition_funs() -> {ok, #{term() => function()}}.
get_post_interposition_funs() -> {ok, kind(post)}.

%% @doc Counters since start: messages `dropped', `delayed', `duplicated' (extra copies),
%% `rewritten' by interposition funs, and `fun_errors' (funs that raised).
-spec stats() -> #{atom() => non_neg_integer()}.
stats() ->
    case persistent_term:get(?COUNTERS, undefined) of
        undefined -> maps:from_list([{N, 0} || N <- ?COUNTER_NAMES]);
        C -> maps:from_list([{N, counters:get(C, I)} || {I, N} <- indexed()])
    end.

%% @doc Whether a remote send must go through `forward/4' (a fun is installed or
%% `egress_delay' is set). One `persistent_term' read.
-spec send_hooks() -> boolean().
send_hooks() -> persistent_term:get(?SEND_HOOKS, false).

%% @doc Runs a remote send through `egress_delay' and the funs, in the sending process, then
%% sends what they leave with `partisan:send_interposed/4'. A message the funs drop or delay
%% returns `ok', as in v5; duplicates return the first copy's result.
-spec forward(node(), partisan:server_ref(), term(), map()) -> ok | {error, term()}.
forward(Node, ServerRef, Msg, Opts) ->
    case partisan_config:get(egress_delay, 0) of
        0 -> ok;
        Delay -> timer:sleep(Delay)
    end,
    case run(forward_message, Node, Msg) of
        drop -> ok;
        {delay, Ms, M} -> gen_server:cast(?MODULE, {send_later, Ms, Node, ServerRef, M, Opts});
        {pass, N, M} -> send_copies(N, Node, ServerRef, M, Opts)
    end.

send_copies(1, Node, ServerRef, Msg, Opts) ->
    partisan:send_interposed(Node, ServerRef, Msg, Opts);
send_copies(N, Node, ServerRef, Msg, Opts) ->
    First = partisan:send_interposed(Node, ServerRef, Msg, Opts),
    _ = [partisan:send_interposed(Node, ServerRef, Msg, Opts) || _ <- lists:seq(2, N)],
    First.

%% @private
-spec init([]) -> {ok, #state{}}.
init([]) ->
    %% Funs do not outlive the application: a restart starts clean, as v5's manager does.
    persistent_term:put(?FUNS, #{pre => #{}, mid => #{}, post => #{}}),
    case persistent_term:get(?COUNTERS, undefined) of
        undefined -> persistent_term:put(?COUNTERS, counters:new(length(?COUNTER_NAMES), [write_concurrency]));
        _ -> ok
    end,
    State = #state{ingress_delay = partisan_config:get(ingress_delay, 0)},
    ok = apply_flags(State),
    {ok, State}.

%% @private
-spec handle_call(term(), gen_server:from(), #state{}) -> {reply, term(), #state{}}.
handle_call({add, Kind, Name, Fun}, _From, State) ->
    Funs = persistent_term:get(?FUNS),
    persistent_term:put(?FUNS, Funs#{Kind := (maps:get(Kind, Funs))#{Name => Fun}}),
    {reply, apply_flags(State), State};
handle_call({remove, Kind, Name}, _From, State) ->
    Funs = persistent_term:get(?FUNS),
    Without = maps:remove(Name, maps:get(Kind, Funs)),
    _ = Without =:= maps:get(Kind, Funs) orelse persistent_term:put(?FUNS, Funs#{Kind := Without}),
    {reply, apply_flags(State), State};
handle_call(_Other, _From, State) ->
    {reply, {error, unknown_call}, State}.

%% @private
-spec handle_cast(term(), #state{}) -> {noreply, #state{}}.
handle_cast({send_later, Ms, Node, ServerRef, Msg, Opts}, State) ->
    _ = erlang:send_after(Ms, self(), {send_now, Node, ServerRef, Msg, Opts}),
    {noreply, State};
handle_cast(_Other, State) ->
    {noreply, State}.

%% @private
-spec handle_info(term(), #state{}) -> {noreply, #state{}}.
handle_info({'$partisan_interpose', From, Pid, Msg}, State = #state{ingress_delay = 0}) ->
    receive_message(From, Pid, Msg),
    {noreply, State};
handle_info({'$partisan_interpose', From, Pid, Msg}, State = #state{held = Held}) ->
    Due = erlang:monotonic_time(millisecond) + State#state.ingress_delay,
    {noreply, arm(State#state{held = queue:in({Due, From, Pid, Msg}, Held)})};
handle_info({again, From, Pid, Msg}, State) ->
    receive_message(From, Pid, Msg),
    {noreply, State};
handle_info(ingress_due, State) ->
    {noreply, release(State#state{timer = undefined})};
handle_info({send_now, Node, ServerRef, Msg, Opts}, State) ->
    case partisan:send_interposed(Node, ServerRef, Msg, Opts) of
        ok -> ok;
        {error, Why} -> ?LOG_WARNING("partisan: a delayed send to ~p failed: ~p", [Node, Why])
    end,
    {noreply, State};
handle_info(_Other, State) ->
    {noreply, State}.

%% @private
-spec terminate(term(), #state{}) -> ok.
terminate(_Reason, _State) ->
    persistent_term:put(?SEND_HOOKS, false),
    _ = catch partisan_nif:set_interposer(undefined),
    ok.

%% Holds received messages `ingress_delay' ms each, in arrival order.
release(State = #state{held = Held}) ->
    Now = erlang:monotonic_time(millisecond),
    case queue:peek(Held) of
        {value, {Due, From, Pid, Msg}} when Due =< Now ->
            receive_message(From, Pid, Msg),
            release(State#state{held = queue:drop(Held)});
        _ ->
            arm(State)
    end.

arm(State = #state{timer = undefined, held = Held}) ->
    case queue:peek(Held) of
        {value, {Due, _, _, _}} ->
            Wait = max(0, Due - erlang:monotonic_time(millisecond)),
            State#state{timer = erlang:send_after(Wait, self(), ingress_due)};
        empty ->
            State
    end;
arm(State) ->
    State.

receive_message(From, Pid, Msg) ->
    _ = case run(receive_message, From, Msg) of
        drop -> ok;
        {delay, 0, M} -> self() ! {again, From, Pid, M};
        {delay, Ms, M} -> erlang:send_after(Ms, self(), {again, From, Pid, M});
        {pass, N, M} -> [Pid ! M || _ <- lists:seq(1, N)]
    end,
    ok.

%% Pre funs, the interposition fold, post funs: what becomes of one message.
-spec run(direction(), node(), term()) -> drop | {delay, non_neg_integer(), term()}
                                             | {pass, pos_integer(), term()}.
run(Dir, Node, Msg) ->
    #{pre := Pre, mid := Mid, post := Post} = persistent_term:get(?FUNS),
    _ = [guarded(Name, F, {Dir, Node, Msg}, ok) || {Name, F} <- lists:sort(maps:to_list(Pre))],
    {Outcome, Result} = fold(lists:sort(maps:to_list(Mid)), Dir, Node, Msg, 1),
    _ = [guarded(Name, F, {Dir, Node, Msg, Result}, ok) || {Name, F} <- lists:sort(maps:to_list(Post))],
    count(Outcome, Msg),
    Outcome.

fold([], _Dir, _Node, Msg, N) ->
    {{pass, N, Msg}, Msg};
fold([{Name, F} | Rest], Dir, Node, Msg, N) ->
    case guarded(Name, F, {Dir, Node, Msg}, Msg) of
        undefined -> {drop, undefined};
        {'$delay', M} = R -> {{delay, 0, M}, R};
        {'$delay', Ms, M} = R when is_integer(Ms), Ms >= 0 -> {{delay, Ms, M}, R};
        {'$duplicate', K, M} when is_integer(K), K >= 1 -> fold(Rest, Dir, Node, M, N * K);
        M -> fold(Rest, Dir, Node, M, N)
    end.

guarded(Name, F, Arg, Default) ->
    try
        F(Arg)
    catch
        Class:Reason ->
            bump(fun_errors, 1),
            ?LOG_WARNING("partisan: interposition fun ~p raised ~p:~p on ~p; the message "
                         "passes unchanged", [Name, Class, Reason, element(1, Arg)]),
            Default
    end.

count(drop, _) -> bump(dropped, 1);
count({delay, _, _}, _) -> bump(delayed, 1);
count({pass, N, M}, Msg) ->
    _ = N > 1 andalso bump(duplicated, N - 1),
    _ = M =/= Msg andalso bump(rewritten, 1),
    true.

bump(Name, By) ->
    {I, Name} = lists:keyfind(Name, 2, indexed()),
    counters:add(persistent_term:get(?COUNTERS), I, By),
    true.

indexed() -> lists:zip(lists:seq(1, length(?COUNTER_NAMES)), ?COUNTER_NAMES).

-spec add(kind(), term(), term()) -> ok | {error, term()}.
add(Kind, Name, Fun) when is_function(Fun, 1) -> call({add, Kind, Name, Fun});
add(_Kind, _Name, Fun) -> {error, {bad_callback, Fun}}.

call(Request) ->
    try gen_server:call(?MODULE, Request)
    catch exit:{noproc, _} -> {error, not_started}
    end.

kind(Kind) -> maps:get(Kind, persistent_term:get(?FUNS, #{}), #{}).

%% The send flag and the data plane's receive routing follow what is installed.
apply_flags(#state{ingress_delay = Ingress}) ->
    Funs = persistent_term:get(?FUNS),
    Any = lists:any(fun(K) -> map_size(maps:get(K, Funs)) > 0 end, [pre, mid, post]),
    Send = Any orelse partisan_config:get(egress_delay, 0) > 0,
    _ = Send =:= send_hooks() orelse persistent_term:put(?SEND_HOOKS, Send),
    partisan_nif:set_interposer(case Any orelse Ingress > 0 of
                                    true -> self();
                                    false -> undefined
                                end).
