%% @doc The one process that receives membership events from the data plane.
%%
%% The Rust driver sends `{partisan_event, ...}' here in order. This process runs `on_up' and
%% `on_down' callbacks (each in its own process, so a slow or crashing callback delays nothing),
%% sends `{nodeup, Node}' / `{nodedown, Node}' to `partisan:monitor_nodes/1,2' subscribers,
%% hands data plane log lines to `logger', and turns the data plane's events and reports into
%% `[partisan, ...]' telemetry events (`partisan_telemetry').
-module(partisan_peer_service_events).
-behaviour(gen_server).

-export([start_link/0, add_callback/4, add_sup_callback/1, monitor_nodes/3]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-include_lib("kernel/include/logger.hrl").

-type which() :: up | down.
-type callback() :: fun(() -> any()) | fun((node()) -> any()) | fun((node(), atom()) -> any()).

-record(state, {callbacks = [] :: [{which(), node() | any, atom() | any, callback()}],
                subscribers = #{} :: #{pid() => {reference(), [term()]}},
                %% add_sup_callback/1's runners, each calling its fun with every update in order.
                sup_callbacks = #{} :: #{pid() => reference()},
                %% The last member list, for the telemetry event's joined/left.
                members = [] :: [node()]}).

%% @doc Starts the registered events process.
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Registers `Fun' to run when `Node' (or `any' node) goes up or down, on `Channel' or on
%% the node as a whole (`any').
-spec add_callback(which(), node() | any, atom() | any, callback()) -> ok | {error, badarg}.
add_callback(Which, Node, Channel, Fun) when is_function(Fun, 0); is_function(Fun, 1);
                                             is_function(Fun, 2) ->
    gen_server:call(?MODULE, {add_callback, Which, Node, Channel, Fun});
add_callback(_, _, _, _) ->
    {error, badarg}.

%% @doc Calls `Fun(Specs)' with the members' node specs on every membership change, until the
%% caller exits (see `partisan_peer_service:add_sup_callback/1').
-spec add_sup_callback(fun((term()) -> any())) -> ok.
add_sup_callback(Fun) when is_function(Fun, 1) ->
    gen_server:call(?MODULE, {add_sup_callback, self(), Fun}).

%% @doc Subscribes or unsubscribes `Pid' to node up/down messages.
-spec monitor_nodes(pid(), boolean(), [term()]) -> ok.
monitor_nodes(Pid, Flag, Opts) ->
    gen_server:call(?MODULE, {monitor_nodes, Pid, Flag, Opts}).

%% @private
-spec init([]) -> {ok, #state{}}.
init([]) ->
    {ok, #state{members = [partisan:node()]}}.

%% @private
-spec handle_call(term(), gen_server:from(), #state{}) -> {reply, term(), #state{}}.
handle_call({add_callback, Which, Node, Channel, Fun}, _From, S) ->
    {reply, ok, S#state{callbacks = S#state.callbacks ++ [{Which, Node, Channel, Fun}]}};
handle_call({add_sup_callback, Caller, Fun}, _From, S = #state{sup_callbacks = Sup}) ->
    Events = self(),
    {Pid, Ref} = spawn_monitor(fun() -> sup_callback(Events, Caller, Fun) end),
    {reply, ok, S#state{sup_callbacks = Sup#{Pid => Ref}}};
handle_call({monitor_nodes, Pid, true, Opts}, _From, S = #state{subscribers = Subs}) ->
    Subs1 = case Subs of
        #{Pid := _} -> Subs;
        _ -> Subs#{Pid => {erlang:monitor(process, Pid), Opts}}
    end,
    {reply, ok, S#state{subscribers = Subs1}};
handle_call({monitor_nodes, Pid, false, _}, _From, S = #state{subscribers = Subs}) ->
    case maps:take(Pid, Subs) of
        {{Ref, _}, Subs1} -> erlang:demonitor(Ref, [flush]), {reply, ok, S#state{subscribers = Subs1}};
        error -> {reply, ok, S}
    end;
handle_call(_, _From, S) ->
    {reply, {error, unknown_call}, S}.

%% @private
-spec handle_cast(term(), #state{}) -> {noreply, #state{}}.
handle_cast(_, S) ->
    {noreply, S}.

%% @private
-spec handle_info(term(), #state{}) -> {noreply, #state{}}.
handle_info({partisan_event, node_up, Node}, S) ->
    run(up, Node, any, S),
    notify(nodeup, Node, S),
    partisan_telemetry:execute([partisan, node, up], #{count => 1}, #{node => Node}),
    {noreply, S};
handle_info({partisan_event, node_down, Node}, S) ->
    run(down, Node, any, S),
    notify(nodedown, Node, S),
    partisan_telemetry:execute([partisan, node, down], #{count => 1}, #{node => Node}),
    {noreply, S};
handle_info({partisan_event, channel_up, Node, Channel}, S) ->
    run(up, Node, Channel, S),
    {noreply, S};
handle_info({partisan_event, channel_down, Node, Channel}, S) ->
    run(down, Node, Channel, S),
    {noreply, S};
handle_info({partisan_event, members, Members}, S = #state{members = Old}) ->
    ?LOG_DEBUG("partisan members: ~p", [Members]),
    partisan_telemetry:execute([partisan, membership, change], #{members => length(Members)},
                               #{node => partisan:node(), members => Members,
                                 joined => Members -- Old, left => Old -- Members}),
    map_size(S#state.sup_callbacks) > 0 andalso begin
        {ok, Specs} = partisan_peer_service:members_for_orchestration(),
        maps:foreach(fun(Pid, _) -> Pid ! {update, Specs} end, S#state.sup_callbacks)
    end,
    {noreply, S#state{members = Members}};
handle_info({partisan_event, connection_up, Node, Channel, Index}, S) ->
    partisan_telemetry:execute([partisan, connection, up], #{count => 1},
                               #{node => Node, channel => Channel, connection => Index}),
    {noreply, S};
handle_info({partisan_event, connection_down, Node, Channel, Index, Reason}, S) ->
    partisan_telemetry:execute([partisan, connection, down], #{count => 1},
                               #{node => Node, channel => Channel, connection => Index,
                                 reason => Reason}),
    {noreply, S};
handle_info({partisan_event, dropped, Reason, Node, Channel, Count}, S) ->
    Meta = #{node => Node, channel => Channel},
    partisan_telemetry:execute([partisan, message, dropped], #{count => Count}, Meta#{reason => Reason}),
    Reason =:= queue_full andalso
        partisan_telemetry:execute([partisan, queue, full], #{count => Count}, Meta),
    {noreply, S};
handle_info({partisan_event, auth_failure, Direction, Peer, Reason, Count}, S) ->
    partisan_telemetry:execute([partisan, auth, failure], #{count => Count},
                               #{direction => Direction, peer => peer(Peer), reason => Reason}),
    {noreply, S};
handle_info({partisan_event, removed, By}, S) ->
    ?LOG_NOTICE("partisan: removed from the cluster by ~p", [By]),
    {noreply, S};
handle_info({partisan_event, Bcast, _, _, _} = Event, S)
  when Bcast =:= bcast_deliver; Bcast =:= bcast_graft ->
    partisan_plumtree_broadcast ! Event,
    {noreply, S};
handle_info({partisan_event, bcast_exchange, _} = Event, S) ->
    partisan_plumtree_broadcast ! Event,
    {noreply, S};
handle_info({partisan_event, upcall, From, Bin}, S) ->
    %% A control frame for the Erlang membership strategy hosted by the manager.
    partisan_peer_service_manager ! {partisan_upcall, From, Bin},
    {noreply, S};
handle_info({partisan_log, Level, Line}, S) ->
    %% At the level the data plane logged it at (error, warning, info or debug).
    logger:log(Level, "partisan data plane: ~ts", [Line]),
    {noreply, S};
handle_info({'DOWN', _, process, Pid, _}, S = #state{subscribers = Subs, sup_callbacks = Sup}) ->
    {noreply, S#state{subscribers = maps:remove(Pid, Subs), sup_callbacks = maps:remove(Pid, Sup)}};
handle_info(_, S) ->
    {noreply, S}.

%% The runner of one supervised callback: calls `Fun' with each update, in order; ends with its
%% caller; tells the caller, as v5's supervised gen_event handler would, when `Fun' raised or
%% this events process ended.
sup_callback(Events, Caller, Fun) ->
    CallerRef = erlang:monitor(process, Caller),
    EventsRef = erlang:monitor(process, Events),
    Id = {?MODULE, make_ref()},
    sup_callback_loop(Fun, Caller, CallerRef, EventsRef, Id).

sup_callback_loop(Fun, Caller, CallerRef, EventsRef, Id) ->
    receive
        {update, State} ->
            try Fun(State) of
                _ -> sup_callback_loop(Fun, Caller, CallerRef, EventsRef, Id)
            catch
                Class:Reason:Stack ->
                    ?LOG_WARNING("partisan: membership callback ~p removed: ~p:~p", [Fun, Class, Reason]),
                    Caller ! {gen_event_EXIT, Id, {'EXIT', {Reason, Stack}}}
            end;
        {'DOWN', CallerRef, process, _, _} ->
            ok;
        {'DOWN', EventsRef, process, _, Reason} ->
            Caller ! {gen_event_EXIT, Id, Reason}
    end.

%% An inbound peer is its source address, as text from the data plane.
peer(Addr) when is_binary(Addr) ->
    case inet:parse_address(binary_to_list(Addr)) of
        {ok, IP} -> IP;
        {error, _} -> Addr
    end;
peer(Node) ->
    Node.

run(Which, Node, Channel, #state{callbacks = Cbs}) ->
    [spawn(fun() -> call(Fun, Node, Channel) end)
     || {W, N, C, Fun} <- Cbs, W =:= Which, N =:= any orelse N =:= Node, C =:= Channel],
    ok.

call(Fun, _, _) when is_function(Fun, 0) -> Fun();
call(Fun, Node, _) when is_function(Fun, 1) -> Fun(Node);
call(Fun, Node, Channel) when is_function(Fun, 2) -> Fun(Node, Channel).

notify(Tag, Node, #state{subscribers = Subs}) ->
    maps:foreach(fun(Pid, {_, Opts}) -> Pid ! message(Tag, Node, Opts) end, Subs).

message(Tag, Node, Opts) ->
    case lists:member(nodedown_reason, Opts) orelse proplists:is_defined(node_type, Opts) of
        true -> {Tag, Node, [{node_type, visible} || Tag =:= nodeup] ++
                             [{nodedown_reason, connection_closed} || Tag =:= nodedown]};
        false -> {Tag, Node}
    end.
