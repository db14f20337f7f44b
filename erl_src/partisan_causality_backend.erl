%% @doc Causal delivery per label (`causal_label' send option, `causal_labels' key; v5's module
%% name).
%%
%% For each configured label, every node keeps a matrix clock (Raynal, Schiper and Toueg,
%% 1991): `sent[{J, I}]' is how many messages of the label node `J' has sent to node `I', as far
%% as this node knows, and `delivered[J]' how many from `J' it has delivered here. A send with
%% `causal_label => L' goes through this process on the sending node, which attaches its matrix
%% and the message's sequence number and sends the envelope to this process on the destination
%% node. There the message is delivered to its destination once every message of the label sent
%% to this node before it (in the happened-before order of the label's messages, nodes being
%% the units) has been delivered; until then it is buffered. Nodes are named with an incarnation
%% (the start of this process), so a restarted sender starts fresh.
%%
%% The buffer holds at most `causal_max_buffered' messages per label, each for at most
%% `causal_max_wait' ms (default `infinity'). When a message arrives to a full buffer, or the
%% oldest has waited that long, the oldest buffered message is delivered without waiting
%% further: the messages it still waits for are given up (counted as `skipped') and dropped if
%% they arrive later (`late'). So causal order is never violated among delivered messages;
%% overflow, or a message lost in transit without `ack', loses messages, counted in `stats/0'.
-module(partisan_causality_backend).
-behaviour(gen_server).

-export([start_link/0, emit/5, is_causal_message/1, unwrap/1, stats/0, receive_message/2,
         set_delivery_fun/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-include_lib("kernel/include/logger.hrl").

-define(TAG, '$partisan_causal').

%% A node of the label's clocks: its name and the incarnation of its backend.
-type member() :: {node(), integer()}.
-record(label, {sent = #{} :: #{{member(), node()} => non_neg_integer()},
                delivered = #{} :: #{member() => non_neg_integer()},
                %% Arrival number => {arrival time (ms), envelope}, oldest first when sorted.
                buffer = #{} :: #{non_neg_integer() => {integer(), tuple()}},
                timer :: reference() | undefined,
                %% set_delivery_fun/2's fun, else partisan:forward_message/4 to this node.
                deliver_fun :: fun((partisan:server_ref(), term()) -> any()) | undefined,
                counts = #{delivered => 0, buffered_total => 0, skipped => 0, late => 0,
                           undeliverable => 0} :: #{atom() => non_neg_integer()}}).
-record(state, {me :: member(), labels :: #{atom() => #label{}}, max :: pos_integer(),
                max_wait :: non_neg_integer() | infinity, arrivals = 0 :: non_neg_integer()}).

%% @doc Starts the backend (registered as `partisan_causality_backend') with the labels of
%% `causal_labels'.
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Sends `Msg' to `ServerRef' on `Node' in causal order with the label's other messages
%% (called by `partisan:forward_message/4' for `causal_label => Label'). `ok' means the envelope
%% is queued, as for any send; `{error, {unknown_causal_label, Label}}' for a label not in
%% `causal_labels'.
-spec emit(atom(), node(), partisan:server_ref(), term(), map()) -> ok | {error, term()}.
emit(Label, Node, ServerRef, Msg, Opts) ->
    try gen_server:call(?MODULE, {emit, Label, Node, ServerRef, Msg, maps:remove(causal_label, Opts)})
    catch exit:{noproc, _} -> {error, not_started}
    end.

%% @doc Whether `Term' is a causal envelope (what receive-side interposition funs see for a
%% message sent with `causal_label').
-spec is_causal_message(term()) -> boolean().
is_causal_message(Term) -> unwrap(Term) =/= error.

%% @doc The label and the user's message inside a causal envelope.
-spec unwrap(term()) -> {ok, atom(), term()} | error.
unwrap({?TAG, Label, _From, _Seq, _Clock, _Dest, Msg}) -> {ok, Label, Msg};
unwrap(_) -> error.

%% @doc Hands a causal envelope of `Label' received by other means (an interposition fun that held
%% it, a manager's `receive_message/3') to this node's backend, which delivers it in causal order
%% as if it had arrived itself (v5's `receive_message/2'). `{error, {not_causal, Label}}' for a
%% term that is not an envelope of `Label'.
-spec receive_message(atom(), term()) -> ok | {error, {not_causal, atom()} | not_started}.
receive_message(Label, Envelope) ->
    case unwrap(Envelope) of
        {ok, Label, _} ->
            case whereis(?MODULE) of
                undefined -> {error, not_started};
                Pid -> Pid ! Envelope, ok
            end;
        _ ->
            {error, {not_causal, Label}}
    end.

%% @doc Sets the fun that delivers `Label''s messages on this node when their turn comes:
%% `Fun(ServerRef, Msg)' runs in the backend process (keep it short), instead of sending `Msg'
%% to `ServerRef' (v5's `set_delivery_fun/2'). A fun that raises counts the message as
%% `undeliverable'. `{error, {unknown_causal_label, Label}}' for a label not in `causal_labels'.
-spec set_delivery_fun(atom(), fun((partisan:server_ref(), term()) -> any())) ->
    ok | {error, term()}.
set_delivery_fun(Label, Fun) when is_function(Fun, 2) ->
    try gen_server:call(?MODULE, {set_delivery_fun, Label, Fun})
    catch exit:{noproc, _} -> {error, not_started}
    end;
set_delivery_fun(_Label, Fun) ->
    {error, {bad_callback, Fun}}.

%% @doc Per label: messages `buffered' now, and since start `delivered', `buffered_total'
%% (delivered later than they arrived), `skipped' (given up when the buffer overflowed), `late'
%% (arrived after being given up, dropped) and `undeliverable' (no such destination process).
-spec stats() -> #{atom() => #{atom() => non_neg_integer()}}.
stats() ->
    try gen_server:call(?MODULE, stats)
    catch exit:{noproc, _} -> #{}
    end.

%% @private
-spec init([]) -> {ok, #state{}}.
init([]) ->
    Labels = partisan_config:get(causal_labels, []),
    Me = {partisan:node(), erlang:system_time(microsecond)},
    {ok, #state{me = Me, labels = maps:from_list([{L, #label{}} || L <- Labels]),
                max = partisan_config:get(causal_max_buffered, 10000),
                max_wait = partisan_config:get(causal_max_wait, infinity)}}.

%% @private
-spec handle_call(term(), gen_server:from(), #state{}) -> {reply, term(), #state{}}.
handle_call({emit, Label, Node, ServerRef, Msg, Opts}, _From, State = #state{me = Me}) ->
    case maps:find(Label, State#state.labels) of
        {ok, L = #label{sent = Sent}} ->
            Seq = maps:get({Me, Node}, Sent, 0) + 1,
            Envelope = {?TAG, Label, Me, Seq, Sent, dest(ServerRef), Msg},
            case partisan:send_interposed(Node, ?MODULE, Envelope, Opts) of
                ok ->
                    L2 = L#label{sent = Sent#{{Me, Node} => Seq}},
                    {reply, ok, State#state{labels = (State#state.labels)#{Label := L2}}};
                Error ->
                    %% Not sent: the clock does not count it, so nothing will wait for it.
                    {reply, Error, State}
            end;
        error ->
            {reply, {error, {unknown_causal_label, Label}}, State}
    end;
handle_call({set_delivery_fun, Label, Fun}, _From, State = #state{labels = Labels}) ->
    case maps:find(Label, Labels) of
        {ok, L} -> {reply, ok, State#state{labels = Labels#{Label := L#label{deliver_fun = Fun}}}};
        error -> {reply, {error, {unknown_causal_label, Label}}, State}
    end;
handle_call(stats, _From, State) ->
    Stats = maps:map(fun(_, #label{buffer = B, counts = C}) -> C#{buffered => map_size(B)} end,
                     State#state.labels),
    {reply, Stats, State};
handle_call(_Other, _From, State) ->
    {reply, {error, unknown_call}, State}.

%% @private
-spec handle_cast(term(), #state{}) -> {noreply, #state{}}.
handle_cast(_Other, State) ->
    {noreply, State}.

%% @private
-spec handle_info(term(), #state{}) -> {noreply, #state{}}.
handle_info(Envelope = {?TAG, Label, _From, _Seq, _Clock, _Dest, _Msg}, State) ->
    case maps:find(Label, State#state.labels) of
        {ok, L} ->
            N = State#state.arrivals,
            L2 = arm(Label, arrive(N, Envelope, L, State), State),
            {noreply, State#state{arrivals = N + 1, labels = (State#state.labels)#{Label := L2}}};
        error ->
            ?LOG_WARNING("partisan: causal message for label ~p, which is not in this node's "
                         "causal_labels: dropped", [Label]),
            {noreply, State}
    end;
handle_info({expire, Label}, State = #state{max_wait = Wait}) ->
    L = (maps:get(Label, State#state.labels))#label{timer = undefined},
    Now = erlang:monotonic_time(millisecond),
    L2 = arm(Label, expire(L, Now - Wait, State), State),
    {noreply, State#state{labels = (State#state.labels)#{Label := L2}}};
handle_info(_Other, State) ->
    {noreply, State}.

%% Gives up waiting for what the messages that arrived before `Before' still wait for.
expire(L = #label{buffer = Buffer}, Before, State) ->
    case maps:size(Buffer) > 0 andalso element(1, maps:get(lists:min(maps:keys(Buffer)), Buffer)) =< Before of
        true -> expire(force_oldest(L, State), Before, State);
        false -> L
    end.

%% With `causal_max_wait', a timer for when the oldest buffered message will have waited enough.
arm(_Label, L, #state{max_wait = infinity}) -> L;
arm(_Label, L = #label{timer = T}, _State) when T =/= undefined -> L;
arm(_Label, L = #label{buffer = B}, _State) when map_size(B) =:= 0 -> L;
arm(Label, L = #label{buffer = B}, #state{max_wait = Wait}) ->
    {Arrived, _} = maps:get(lists:min(maps:keys(B)), B),
    In = max(0, Arrived + Wait - erlang:monotonic_time(millisecond)),
    L#label{timer = erlang:send_after(In, self(), {expire, Label})}.

%% One envelope arrives: dropped if late, delivered with what it unblocks if it can be, else
%% buffered (forcing the oldest out when the buffer is full).
arrive(N, Env, L, State = #state{me = {MeNode, _}, max = Max}) ->
    case status(Env, L, MeNode) of
        late ->
            bump(late, 1, L);
        ready ->
            drain(deliver(Env, L, MeNode), MeNode);
        blocked ->
            Now = erlang:monotonic_time(millisecond),
            L2 = bump(buffered_total, 1, L#label{buffer = (L#label.buffer)#{N => {Now, Env}}}),
            case map_size(L2#label.buffer) > Max of
                true -> force_oldest(L2, State);
                false -> L2
            end
    end.

%% Delivers the oldest buffered message, giving up what it waits for, then what that unblocks.
force_oldest(L = #label{buffer = Buffer, delivered = D0}, #state{me = {MeNode, _}}) ->
    Oldest = lists:min(maps:keys(Buffer)),
    {_, Env = {?TAG, _, From, Seq, Clock, _, _}} = maps:get(Oldest, Buffer),
    Needs = maps:put(From, Seq - 1,
                     maps:from_list([{K, C} || {{K, To}, C} <- maps:to_list(Clock), To =:= MeNode])),
    {D, Skipped} = maps:fold(fun(K, C, {Acc, S}) ->
                                     Have = maps:get(K, Acc, 0),
                                     case C > Have of
                                         true -> {Acc#{K => C}, S + C - Have};
                                         false -> {Acc, S}
                                     end
                             end, {D0, 0}, Needs),
    ?LOG_WARNING("partisan: causal delivery gave up waiting (~p buffered): ~p message(s) given up",
                 [map_size(Buffer), Skipped]),
    L2 = bump(skipped, Skipped, L#label{delivered = D, buffer = maps:remove(Oldest, Buffer)}),
    drain(purge_late(deliver(Env, L2, MeNode), MeNode), MeNode).

%% Delivers buffered messages while one is ready.
drain(L = #label{buffer = Buffer}, MeNode) ->
    Ready = [K || K <- lists:sort(maps:keys(Buffer)),
                  status(element(2, maps:get(K, Buffer)), L, MeNode) =:= ready],
    case Ready of
        [] -> L;
        [K | _] ->
            {_, Env} = maps:get(K, Buffer),
            drain(deliver(Env, L#label{buffer = maps:remove(K, Buffer)}, MeNode), MeNode)
    end.

purge_late(L = #label{buffer = Buffer}, MeNode) ->
    Late = [K || {K, {_, Env}} <- maps:to_list(Buffer), status(Env, L, MeNode) =:= late],
    bump(late, length(Late), L#label{buffer = maps:without(Late, Buffer)}).

status({?TAG, _, From, Seq, Clock, _, _}, #label{delivered = D}, MeNode) ->
    case Seq =< maps:get(From, D, 0) of
        true -> late;
        false ->
            Waits = [K || {{K, To}, C} <- maps:to_list(Clock), To =:= MeNode, K =/= From,
                          maps:get(K, D, 0) < C],
            case Waits =:= [] andalso maps:get(From, D, 0) =:= Seq - 1 of
                true -> ready;
                false -> blocked
            end
    end.

deliver({?TAG, _, From, Seq, Clock, Dest, Msg}, L = #label{sent = Sent, delivered = D}, MeNode) ->
    Result = deliver_to(L#label.deliver_fun, Dest, Msg),
    Merged = maps:fold(fun(K, C, Acc) -> maps:update_with(K, fun(V) -> max(V, C) end, C, Acc) end,
                       Sent, Clock#{{From, MeNode} => Seq}),
    L2 = L#label{sent = Merged, delivered = D#{From => Seq}},
    case Result of
        ok -> bump(delivered, 1, L2);
        {error, _} -> bump(undeliverable, 1, L2)
    end.

deliver_to(undefined, Dest, Msg) ->
    partisan:forward_message(partisan:node(), Dest, Msg, #{});
deliver_to(Fun, Dest, Msg) ->
    try Fun(Dest, Msg) of
        _ -> ok
    catch
        Class:Reason ->
            ?LOG_WARNING("partisan: causal delivery fun raised ~p:~p", [Class, Reason]),
            {error, delivery_fun}
    end.

bump(Key, By, L = #label{counts = C}) ->
    L#label{counts = maps:update_with(Key, fun(V) -> V + By end, By, C)}.

%% The destination as the receiving node resolves it (`partisan:forward_message/4' there).
dest({Name, _Node}) when is_atom(Name) -> Name;
dest(Other) -> Other.
