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

%% @doc Runs the Erlang membership strategy's `join/3' for `Spec'.
-spec strategy_join(partisan:node_spec()) -> ok.
strategy_join(Spec) -> gen_server:call(?MODULE, {strategy, join, Spec}).

%% @doc Runs the Erlang membership strategy's `leave/2' for `Spec'.
-spec strategy_leave(partisan:node_spec()) -> ok.
strategy_leave(Spec) -> gen_server:call(?MODULE, {strategy, leave, Spec}).

%% @private
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
handle_call({strategy, Fun, Spec}, _From, S = #strategy{mod = Mod, state = State}) ->
    Result = case Fun of
        join -> Mod:join(State, Spec, undefined);
        leave -> Mod:leave(State, Spec)
    end,
    {reply, ok, apply_result(Result, S)};
handle_call(_, _From, S) ->
    {reply, {error, unknown_call}, S}.

%% @private
handle_cast(_, S) -> {noreply, S}.

%% @private
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
