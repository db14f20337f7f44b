%% @doc The process that owns the lifetime of the Rust data plane, for every manager.
%%
%% Membership, connections and gossip run in the Rust runtime; this process starts it with the
%% validated config (the overlay chosen by `peer_service_manager') when the application starts,
%% and stops it (closing every socket and thread) when the application stops. API calls do not
%% go through this process. The manager modules Partisan users name in their config
%% (`partisan_pluggable_peer_service_manager', ...) start this process.
%%
%% With an Erlang `membership_strategy' (see `partisan_membership_strategy') this process also
%% hosts the strategy module: it runs its callbacks, hands the member list to the data plane and
%% sends the strategy's messages on the membership channel.
-module(partisan_peer_service_manager).
-behaviour(gen_server).

-export([start_link/0, node_spec/0, strategy_join/1, strategy_leave/1]).
%% The parts of v5's manager API that are the manager's own (the manager modules delegate to
%% them, see partisan_peer_service_manager_api.hrl).
-export([decode/1, send_message/2, receive_message/3, supports_capability/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-include_lib("kernel/include/logger.hrl").

%% How long a strategy message waits for its node's link before it is dropped.
-define(PENDING_TTL_MS, 10000).
-define(RETRY_MS, 50).

-record(strategy, {mod :: module(), state :: term(), interval :: non_neg_integer(),
                   pending = [] :: [{integer(), node(), binary()}],
                   retry_armed = false :: boolean()}).

-include("partisan_interposition_api.hrl").

%% @doc Starts the data plane and registers the manager.
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc This node's spec, with the ports actually bound.
-spec node_spec() -> partisan:node_spec().
node_spec() ->
    persistent_term:get({?MODULE, node_spec}).

%% @doc The node specs in a membership state (v5's `Manager:decode/1'): the list of specs given to
%% `partisan_peer_service:add_sup_callback/1' callbacks (returned as they are), a list of names
%% or specs, or `get_local_state/0''s `{ok, Views}' (the members: the `members' view, or
%% HyParView's `active' view and this node). A name is given the spec the data plane knows for
%% it (`members_for_orchestration/0'); a name it knows none for comes back as `#{name => Node}'.
%% Raises `badarg' for anything else.
-spec decode(term()) -> [partisan:node_spec() | #{name := node()}].
decode({ok, Views}) when is_map(Views) -> decode(Views);
decode(#{members := Members}) when is_list(Members) -> decode(Members);
decode(#{active := Active}) when is_list(Active) -> decode(lists:usort([partisan:node() | Active]));
decode(State) when is_list(State) ->
    Known = maps:from_list([{N, S} || S = #{name := N} <- partisan_nif:member_specs()]),
    [case E of
         #{name := N} when is_atom(N) -> E;
         N when is_atom(N) -> maps:get(N, Known, #{name => N});
         _ -> erlang:error(badarg, [State])
     end || E <- State];
decode(State) ->
    erlang:error(badarg, [State]).

%% @doc Sends `Msg' to the peer service manager of `Node' (v5's `send_message/2'), on the default
%% channel; there `receive_message/3' handles it. `ok' or the send's error
%% (`partisan:forward_message/4').
-spec send_message(node(), term()) -> ok | {error, term()}.
send_message(Node, Msg) ->
    partisan:forward_message(Node, ?MODULE, {'$partisan_manager_message', partisan:node(), Msg}, #{}).

%% @doc Handles a message for this node's manager from `From' (v5's `receive_message/3'). The
%% membership protocols run in the data plane, so what a manager is left to receive is v5's
%% forwarding commands: `{forward_message, ServerRef, Msg}' (and v5's acknowledged form
%% `{forward_message, SrcNode, Clock, ServerRef, Msg}') deliver `Msg' to `ServerRef' on this
%% node; a causal envelope (`partisan_causality_backend:is_causal_message/1') goes to the causal
%% delivery backend. Anything else: `{error, {unknown_message, Msg}}'.
-spec receive_message(node(), atom(), term()) -> ok | {error, term()}.
receive_message(_From, _Channel, {forward_message, ServerRef, Msg}) ->
    partisan:forward_message(partisan:node(), ServerRef, Msg, #{});
receive_message(_From, _Channel, {forward_message, _SrcNode, _Clock, ServerRef, Msg}) ->
    partisan:forward_message(partisan:node(), ServerRef, Msg, #{});
receive_message(_From, _Channel, Msg) ->
    case partisan_causality_backend:unwrap(Msg) of
        {ok, Label, _} -> partisan_causality_backend:receive_message(Label, Msg);
        error -> {error, {unknown_message, Msg}}
    end.

%% @doc Whether the managers support `Capability': `monitoring' (`partisan:monitor/2' and
%% node monitors work on every overlay); nothing else, as in v5.
-spec supports_capability(atom()) -> boolean().
supports_capability(monitoring) -> true;
supports_capability(_) -> false.

%% @doc Runs the Erlang membership strategy's `join/3' for `Spec'.
-spec strategy_join(partisan:node_spec()) -> ok.
strategy_join(Spec) -> gen_server:call(?MODULE, {strategy, join, Spec}).

%% @doc Runs the Erlang membership strategy's `leave/2' for `Spec'.
-spec strategy_leave(partisan:node_spec()) -> ok.
strategy_leave(Spec) -> gen_server:call(?MODULE, {strategy, leave, Spec}).

%% @private
-spec init([]) -> {ok, map()} | {stop, term()}.
init([]) ->
    process_flag(trap_exit, true),
    Events = whereis(partisan_peer_service_events),
    NifConfig = (partisan_config:nif_config())#{events => Events},
    case partisan_nif:start(NifConfig) of
        {ok, Spec} ->
            persistent_term:put({?MODULE, node_spec}, Spec),
            case NifConfig of
                #{overlay := external} -> {ok, start_strategy(Spec)};
                _ -> {ok, undefined}
            end;
        {error, Reason} ->
            {stop, {data_plane_start_failed, Reason}}
    end.

start_strategy(Spec) ->
    Mod = partisan_config:get(membership_strategy),
    Interval = partisan_config:get(periodic_interval),
    {ok, Members, State} = Mod:init(Spec),
    ok = partisan_nif:set_members(Members),
    _ = schedule(periodic, Interval),
    #strategy{mod = Mod, state = State, interval = Interval}.

%% @private
-spec handle_call(term(), gen_server:from(), map()) -> {reply, term(), map()}.
handle_call({strategy, Fun, Spec}, _From, S = #strategy{mod = Mod, state = State}) ->
    Result = case Fun of
        join -> Mod:join(State, Spec, undefined);
        leave -> Mod:leave(State, Spec)
    end,
    {reply, ok, apply_result(Result, S)};
handle_call(_, _From, S) ->
    {reply, {error, unknown_call}, S}.

%% @private
-spec handle_cast(term(), map()) -> {noreply, map()}.
handle_cast(_, S) -> {noreply, S}.

%% @private
-spec handle_info(term(), map()) -> {noreply, map()}.
handle_info({'$partisan_manager_message', From, Msg}, S) ->
    case receive_message(From, undefined, Msg) of
        ok -> ok;
        {error, Reason} -> ?LOG_WARNING("partisan: manager message from ~p not handled: ~p", [From, Reason])
    end,
    {noreply, S};
handle_info({partisan_upcall, From, Bin}, S = #strategy{mod = Mod, state = State}) ->
    %% From an authenticated peer; decoded like Distributed Erlang decodes (node names in specs
    %% may be new atoms).
    try binary_to_term(Bin) of
        Msg -> {noreply, apply_result(Mod:handle_message(State, Msg), S)}
    catch
        error:badarg ->
            ?LOG_WARNING("partisan: undecodable membership strategy message from ~p dropped", [From]),
            {noreply, S}
    end;
handle_info(periodic, S = #strategy{mod = Mod, state = State, interval = Interval}) ->
    _ = schedule(periodic, Interval),
    {noreply, apply_result(Mod:periodic(State), S)};
handle_info(retry, S = #strategy{}) ->
    {noreply, flush(S#strategy{retry_armed = false})};
handle_info(_, S) ->
    {noreply, S}.

apply_result({ok, Members, Out, State}, S = #strategy{pending = Pending}) ->
    ok = partisan_nif:set_members(Members),
    Now = erlang:monotonic_time(millisecond),
    New = [{Now + ?PENDING_TTL_MS, Node, term_to_binary(Msg)} || {Node, Msg} <- Out],
    flush(S#strategy{state = State, pending = Pending ++ New}).

%% Sends what can be sent; keeps the rest (links still opening) until its deadline.
flush(S = #strategy{pending = Pending}) ->
    Now = erlang:monotonic_time(millisecond),
    Left = lists:filter(
             fun({Deadline, Node, Bin}) ->
                     case partisan_nif:send_control(Node, Bin) of
                         ok -> false;
                         {error, _} when Deadline > Now -> true;
                         {error, Reason} ->
                             ?LOG_WARNING("partisan: membership strategy message to ~p dropped: ~p",
                                          [Node, Reason]),
                             false
                     end
             end, Pending),
    Arm = Left =/= [] andalso not S#strategy.retry_armed,
    Arm andalso schedule(retry, ?RETRY_MS),
    S#strategy{pending = Left, retry_armed = S#strategy.retry_armed orelse Arm}.

schedule(_, 0) -> ok;
schedule(Msg, Ms) -> erlang:send_after(Ms, self(), Msg).

%% @private
%% Stopping flushes every send queue (for at most `stop_flush_timeout'); what could not be
%% written in time is reported here.
-spec terminate(term(), map()) -> ok.
terminate(_Reason, _S) ->
    case partisan_nif:stop() of
        {ok, #{undelivered_on_stop := N, elapsed_ms := Ms}} when N > 0 ->
            ?LOG_WARNING("partisan: stop flushed the send queues for ~b ms; ~b accepted messages "
                         "could not be written in time and were dropped (raise stop_flush_timeout "
                         "or leave/0 first)", [Ms, N]);
        _ ->
            ok
    end,
    persistent_term:erase({?MODULE, node_spec}),
    ok.
