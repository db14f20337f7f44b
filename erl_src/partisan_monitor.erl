%% @doc Process and node monitors across Partisan nodes, on every overlay.
%%
%% A monitor on a remote process is kept by this process on both nodes. The watching node
%% records it (owner, object, reference) and asks the monitor process of the target's node to
%% watch the target locally with `erlang:monitor/2'; when the target exits, that node sends the
%% real exit reason back (on the target's own connection, so the target's last messages arrive
%% before its `DOWN'), and the owner gets `{'DOWN', Ref, process, Object, Reason}'. `demonitor'
%% removes both sides; an owner that exits takes its monitors with it.
%%
%% Node loss turns every monitor on a node into `noconnection', delivers `{nodedown, Node}' to
%% `monitor_node/2' watchers, ends the calls waiting on it (`partisan_gen') and tells the call
%% relays. What "lost" means depends on the overlay:
%% <ul>
%% <li>Full mesh: every member is linked, so the node is lost when its last link drops (as in
%%     Distributed Erlang, a partition counts as a loss).</li>
%% <li>Partial overlays (HyParView, client-server, static, Erlang strategies): a node that leaves
%%     the active view may be alive and reachable through the overlay. Monitor traffic to it is
%%     relayed, and while this node has monitors, watchers or calls on it, it is probed through
%%     the overlay every `monitor_probe_interval' ms while it is not linked: no answer for
%%     `monitor_probe_timeout' ms means lost. Each answer carries the incarnation of the peer's
%%     monitor process, so a restarted node is recognised even if it links up again at once.</li>
%% </ul>
%% No entry outlives either side: `info/0' gives the table sizes.
-module(partisan_monitor).
-behaviour(gen_server).

-export([start_link/0, monitor/2, demonitor/2, monitor_node/2, monitor_nodes/2, info/0,
         server_channel/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(TAG, '$partisan_monitor').
%% Server pid -> the channel its answers to remote callers take (read by the call relays).
-define(SERVER_CHANNELS, partisan_server_channels).

-record(out, {owner :: pid(), node :: node(), object :: term(), returned :: term()}).
-record(in, {node :: node(), ref :: reference(), channel :: atom(), key :: pid() | undefined}).
-record(peer, {incarnation :: integer() | undefined,
               last_seen :: integer(),
               pinged_at :: integer() | undefined}).
-record(state, {
    out = #{} :: #{reference() => #out{}},
    in = #{} :: #{reference() => #in{}},
    in_index = #{} :: #{{node(), reference()} => reference()},
    %% Local processes holding monitors or node watches: their monitor, their monitors' refs,
    %% and how many watches per node.
    owners = #{} :: #{pid() => {reference(), #{reference() => true}, #{node() => pos_integer()}}},
    peers = #{} :: #{node() => #peer{}},
    %% Monitors of servers with a channel of their own (see server_channel/2).
    servers = #{} :: #{reference() => pid()},
    full_mesh :: boolean(),
    incarnation :: integer(),
    interval :: pos_integer(),
    timeout :: pos_integer(),
    ticking = false :: boolean()
}).

%% @doc Starts the registered monitor process.
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Monitors a process on another node: a pid, `{Name, Node}' or a remote reference. Returns
%% the monitor reference (a remote reference when `Target' is one, as in Partisan v5). `Opts' may
%% name the `{channel, C}' the monitor's messages use. When the monitor layer is not running, the
%% reference gets an immediate `DOWN' with reason `notalive'.
-spec monitor(pid() | {atom(), node()} | partisan_remote_ref:remote_ref(), [term()] | map()) -> term().
monitor(Target, Opts) ->
    Channel = partisan_otp:channel(Opts),
    %% `release': the target waits (see partisan:spawn_monitor/4) until its monitor is set.
    Release = proplists:get_value(release, Opts, false),
    try gen_server:call(?MODULE, {monitor, self(), Target, Channel, Release}, infinity)
    catch exit:{noproc, _} ->
        Ref = make_ref(),
        self() ! {'DOWN', Ref, process, Target, notalive},
        Ref
    end.

%% @doc Removes a monitor set with `monitor/2' by the caller. `flush' drops its `DOWN' if it
%% already arrived; `info' makes the result tell whether the monitor was still active.
-spec demonitor(term(), [flush | info]) -> boolean().
demonitor(Ref, Opts) ->
    Active = try gen_server:call(?MODULE, {demonitor, self(), Ref}, infinity)
             catch exit:{noproc, _} -> false
             end,
    %% The monitor process sends DOWN before it answers, so a DOWN is in the mailbox by now.
    lists:member(flush, Opts) andalso receive {'DOWN', Ref, _, _, _} -> true after 0 -> true end,
    Active orelse not lists:member(info, Opts).

%% @doc Turns monitoring of `Node' on (`true') or off (`false', one call's worth) for the caller:
%% `{nodedown, Node}' arrives when the node is lost, at once when it is not reachable.
-spec monitor_node(node(), boolean()) -> true.
monitor_node(Node, Flag) when is_atom(Node), is_boolean(Flag) ->
    gen_server:call(?MODULE, {monitor_node, self(), Node, Flag}, infinity).

%% @doc Subscribes the caller to `{nodeup, Node}' / `{nodedown, Node}' (see
%% `partisan:monitor_nodes/2').
-spec monitor_nodes(boolean(), [term()]) -> ok.
monitor_nodes(Flag, Opts) ->
    partisan_peer_service_events:monitor_nodes(self(), Flag, Opts).

%% @doc Makes the answers of the local server `Pid' to remote callers travel on `Channel' (its
%% `{channel, C}' start option), for as long as it lives. `undefined' (the default) is a no-op.
-spec server_channel(pid(), atom()) -> ok.
server_channel(_Pid, undefined) ->
    ok;
server_channel(Pid, Channel) when is_pid(Pid), is_atom(Channel) ->
    gen_server:call(?MODULE, {server_channel, Pid, Channel}, infinity).

%% @doc Table sizes: monitors held here on remote processes (`out'), monitors remote processes
%% hold on local ones (`in'), local processes holding monitors or node watches (`owners'), node
%% watches (`node_watches') and nodes being watched for loss (`peers').
-spec info() -> #{atom() => non_neg_integer()}.
info() ->
    gen_server:call(?MODULE, info, infinity).

%% @private
init([]) ->
    process_flag(trap_exit, true),
    ok = partisan_peer_service_events:monitor_nodes(self(), true, []),
    ?SERVER_CHANNELS = ets:new(?SERVER_CHANNELS, [named_table, protected, {read_concurrency, true}]),
    S = #state{full_mesh = partisan_otp:is_full_mesh(),
               incarnation = erlang:system_time(microsecond),
               interval = partisan_config:get(monitor_probe_interval, 1000),
               timeout = partisan_config:get(monitor_probe_timeout, 3000)},
    {ok, tick(S)}.

%% @private
handle_call({monitor, Owner, Target, Channel, Release}, _From, S) ->
    {Ref, Returned} = new_ref(Target),
    Node = partisan_otp:node_of(Target),
    S1 = own(Owner, Ref, S),
    S2 = S1#state{out = (S1#state.out)#{Ref => #out{owner = Owner, node = Node, object = Target,
                                                    returned = Returned}}},
    Request = {?TAG, monitor, partisan:node(), Ref, partisan_otp:dest(Target), Channel, Release},
    case to_peer(Node, Request, #{channel => Channel}) of
        ok -> {reply, Returned, interest(Node, S2)};
        {error, _} -> {reply, Returned, fire(Ref, noconnection, S2)}
    end;
handle_call({demonitor, Owner, Returned}, _From, S = #state{out = Out}) ->
    Ref = local_ref(Returned),
    case Out of
        #{Ref := #out{owner = Owner, node = Node}} ->
            _ = to_peer(Node, {?TAG, demonitor, partisan:node(), Ref}, #{}),
            {reply, true, disown(Owner, Ref, S#state{out = maps:remove(Ref, Out)})};
        _ ->
            {reply, false, S}
    end;
handle_call({monitor_node, Owner, Node, true}, _From, S) ->
    S1 = watch(Owner, Node, S),
    case S#state.full_mesh andalso not partisan:is_connected(Node) of
        true -> {reply, true, lost(Node, S1)};
        false -> {reply, true, interest(Node, S1)}
    end;
handle_call({monitor_node, Owner, Node, false}, _From, S) ->
    {reply, true, unwatch(Owner, Node, S)};
handle_call({server_channel, Pid, Channel}, _From, S) ->
    true = ets:insert(?SERVER_CHANNELS, {Pid, Channel}),
    Mref = erlang:monitor(process, Pid),
    {reply, ok, S#state{servers = (S#state.servers)#{Mref => Pid}}};
handle_call(info, _From, S) ->
    Watches = lists:sum([N || {_, _, W} <- maps:values(S#state.owners), N <- maps:values(W)]),
    {reply, #{out => map_size(S#state.out), in => map_size(S#state.in),
              owners => map_size(S#state.owners), node_watches => Watches,
              peers => map_size(S#state.peers), server_channels => ets:info(?SERVER_CHANNELS, size)}, S};
handle_call(_, _From, S) ->
    {reply, {error, unknown_call}, S}.

%% @private
handle_cast(_, S) ->
    {noreply, S}.

%% @private
handle_info({?TAG, monitor, From, WRef, Target, Channel, Release}, S) ->
    {noreply, interest(From, watch_local(From, WRef, Target, Channel, Release, S))};
handle_info({?TAG, demonitor, From, WRef}, S = #state{in_index = Index}) ->
    case maps:take({From, WRef}, Index) of
        {Mref, Index1} ->
            erlang:demonitor(Mref, [flush]),
            {noreply, S#state{in = maps:remove(Mref, S#state.in), in_index = Index1}};
        error ->
            {noreply, S}
    end;
handle_info({?TAG, down, _From, Ref, Reason}, S) ->
    {noreply, fire(Ref, Reason, S)};
handle_info({?TAG, ping, From}, S) ->
    _ = to_peer(From, {?TAG, pong, partisan:node(), S#state.incarnation}, #{}),
    {noreply, S};
handle_info({?TAG, pong, From, Incarnation}, S) ->
    {noreply, pong(From, Incarnation, S)};
handle_info({'DOWN', Mref, process, Pid, Reason}, S = #state{in = In, owners = Owners}) ->
    case maps:take(Mref, In) of
        {#in{node = Node, ref = WRef, channel = Channel, key = Key}, In1} ->
            Down = {?TAG, down, partisan:node(), WRef, Reason},
            _ = to_peer(Node, Down, #{channel => Channel, key => Key}),
            {noreply, S#state{in = In1, in_index = maps:remove({Node, WRef}, S#state.in_index)}};
        error ->
            case {Owners, maps:take(Mref, S#state.servers)} of
                {#{Pid := {Mref, _, _}}, _} ->
                    {noreply, owner_exited(Pid, S)};
                {_, {Pid, Servers}} ->
                    true = ets:delete(?SERVER_CHANNELS, Pid),
                    {noreply, S#state{servers = Servers}};
                _ ->
                    {noreply, S}
            end
    end;
handle_info({nodedown, Node}, S = #state{full_mesh = true}) ->
    {noreply, lost(Node, S)};
handle_info({nodedown, Node}, S = #state{peers = Peers}) when is_map_key(Node, Peers) ->
    {noreply, ping(Node, S)};
handle_info({nodeup, Node}, S = #state{full_mesh = false, peers = Peers}) when is_map_key(Node, Peers) ->
    %% A node that came back may be a new incarnation: its answer tells.
    {noreply, ping(Node, S)};
handle_info({'$partisan_send_after', Dest, Msg, Opts}, S) ->
    %% A timer of partisan:send_after/4 to a process of another node expired.
    _ = catch partisan:forward_message(Dest, Msg, Opts),
    {noreply, S};
handle_info(probe, S) ->
    {noreply, probe(S#state{ticking = false})};
handle_info(_, S) ->
    {noreply, S}.

%% @private
terminate(_Reason, #state{out = Out}) ->
    %% Whoever waits on a remote process would wait forever: tell them the connection is gone.
    maps:foreach(fun(_, #out{owner = Owner, object = Object, returned = Returned}) ->
                         Owner ! {'DOWN', Returned, process, Object, noconnection}
                 end, Out).

%% -- remote side ---------------------------------------------------------------

%% Watches a local process for `From'; a target that is not a local process is reported at once.
watch_local(From, WRef, Target, Channel, Release, S = #state{in = In, in_index = Index}) ->
    case local_target(Target) of
        {ok, Local, Key} ->
            Mref = erlang:monitor(process, Local),
            Release andalso is_pid(Key) andalso (Key ! '$partisan_release'),
            S#state{in = In#{Mref => #in{node = From, ref = WRef, channel = Channel, key = Key}},
                    in_index = Index#{{From, WRef} => Mref}};
        error ->
            _ = to_peer(From, {?TAG, down, partisan:node(), WRef, noproc}, #{channel => Channel}),
            S
    end.

%% The process to watch and the pid whose connection its DOWN should take (the target's own, so
%% its last messages arrive first).
local_target(Dest) ->
    case partisan_otp:local(Dest) of
        {ok, Pid} when is_pid(Pid) -> {ok, Pid, Pid};
        {ok, Name} -> {ok, Name, whereis(Name)};
        error -> error
    end.

%% -- watching side -------------------------------------------------------------

new_ref(Target) ->
    Ref = make_ref(),
    case is_pid(Target) orelse is_tuple(Target) andalso tuple_size(Target) =:= 2
         andalso is_atom(element(1, Target)) of
        true -> {Ref, Ref};
        false -> {Ref, partisan_remote_ref:from_term(Ref)}
    end.

local_ref(Ref) when is_reference(Ref) -> Ref;
local_ref(Remote) ->
    try partisan_remote_ref:to_reference(Remote) catch error:badarg -> undefined end.

%% Delivers the DOWN of monitor `Ref' (if it still exists) and forgets it.
fire(Ref, Reason, S = #state{out = Out}) ->
    case maps:take(Ref, Out) of
        {#out{owner = Owner, object = Object, returned = Returned}, Out1} ->
            Owner ! {'DOWN', Returned, process, Object, Reason},
            disown(Owner, Ref, S#state{out = Out1});
        error ->
            S
    end.

own(Owner, Ref, S = #state{owners = Owners}) ->
    {Mref, Refs, Watches} = owner(Owner, Owners),
    S#state{owners = Owners#{Owner => {Mref, Refs#{Ref => true}, Watches}}}.

disown(Owner, Ref, S = #state{owners = Owners}) ->
    case Owners of
        #{Owner := {Mref, Refs, Watches}} -> S#state{owners = keep_owner(Owner, {Mref, maps:remove(Ref, Refs), Watches}, Owners)};
        _ -> S
    end.

watch(Owner, Node, S = #state{owners = Owners}) ->
    {Mref, Refs, Watches} = owner(Owner, Owners),
    S#state{owners = Owners#{Owner => {Mref, Refs, maps:update_with(Node, fun(N) -> N + 1 end, 1, Watches)}}}.

unwatch(Owner, Node, S = #state{owners = Owners}) ->
    case Owners of
        #{Owner := {Mref, Refs, #{Node := N} = Watches}} ->
            Watches1 = case N of 1 -> maps:remove(Node, Watches); _ -> Watches#{Node := N - 1} end,
            S#state{owners = keep_owner(Owner, {Mref, Refs, Watches1}, Owners)};
        _ ->
            S
    end.

owner(Owner, Owners) ->
    case Owners of
        #{Owner := Entry} -> Entry;
        _ -> {erlang:monitor(process, Owner), #{}, #{}}
    end.

%% An owner with nothing left is no longer monitored.
keep_owner(Owner, {Mref, Refs, Watches}, Owners) when map_size(Refs) =:= 0, map_size(Watches) =:= 0 ->
    erlang:demonitor(Mref, [flush]),
    maps:remove(Owner, Owners);
keep_owner(Owner, Entry, Owners) ->
    Owners#{Owner => Entry}.

owner_exited(Owner, S = #state{owners = Owners, out = Out}) ->
    {{_, Refs, _}, Owners1} = maps:take(Owner, Owners),
    Out1 = maps:fold(fun(Ref, _, Acc) ->
                             case maps:take(Ref, Acc) of
                                 {#out{node = Node}, Acc1} ->
                                     _ = to_peer(Node, {?TAG, demonitor, partisan:node(), Ref}, #{}),
                                     Acc1;
                                 error -> Acc
                             end
                     end, Out, Refs),
    S#state{owners = Owners1, out = Out1}.

%% -- node loss -----------------------------------------------------------------

lost(Node, S = #state{out = Out, in = In}) ->
    Gone = maps:filter(fun(_, #out{node = N}) -> N =:= Node end, Out),
    S1 = maps:fold(fun(Ref, _, Acc) -> fire(Ref, noconnection, Acc) end, S, Gone),
    {InGone, InKept} = lists:partition(fun({_, #in{node = N}}) -> N =:= Node end, maps:to_list(In)),
    [erlang:demonitor(Mref, [flush]) || {Mref, _} <- InGone],
    Index = maps:filter(fun({N, _}, _) -> N =/= Node end, S1#state.in_index),
    Owners1 = maps:fold(fun(Pid, {Mref, Refs, Watches}, Acc) ->
                                case maps:take(Node, Watches) of
                                    {Count, Watches1} ->
                                        _ = [Pid ! {nodedown, Node} || _ <- lists:seq(1, Count)],
                                        keep_owner(Pid, {Mref, Refs, Watches1}, Acc);
                                    error -> Acc
                                end
                        end, S1#state.owners, S1#state.owners),
    _ = partisan_nif:fail_replies(Node, noconnection),
    ok = partisan_call_relay:node_lost(Node),
    S1#state{in = maps:from_list(InKept), in_index = Index, owners = Owners1,
             peers = maps:remove(Node, S1#state.peers)}.

%% -- probing (partial overlays) ------------------------------------------------

%% `Node' matters to this node now: on a partial overlay it is watched for loss.
interest(_Node, S = #state{full_mesh = true}) ->
    S;
interest(Node, S = #state{peers = Peers}) when is_map_key(Node, Peers) ->
    S;
interest(Node, S = #state{peers = Peers}) ->
    Peer = #peer{last_seen = now_ms()},
    tick(ping(Node, S#state{peers = Peers#{Node => Peer}})).

ping(Node, S = #state{peers = Peers}) ->
    case Peers of
        #{Node := Peer} ->
            _ = to_peer(Node, {?TAG, ping, partisan:node()}, #{}),
            S#state{peers = Peers#{Node := Peer#peer{pinged_at = now_ms()}}};
        _ ->
            S
    end.

pong(Node, Incarnation, S = #state{peers = Peers}) ->
    case Peers of
        #{Node := #peer{incarnation = Known}} when Known =/= undefined, Known =/= Incarnation ->
            %% The node restarted: what it watched for us is gone with its old incarnation.
            lost(Node, S);
        #{Node := Peer} ->
            S#state{peers = Peers#{Node := Peer#peer{incarnation = Incarnation, last_seen = now_ms(),
                                                     pinged_at = undefined}}};
        _ ->
            S
    end.

%% Every interval: nodes that matter are kept if linked or answering, lost after the timeout;
%% nodes that no longer matter are dropped.
probe(S = #state{full_mesh = true}) ->
    S;
probe(S) ->
    Now = now_ms(),
    Wanted = wanted(S),
    S1 = maps:fold(fun(Node, Peer, Acc) -> probe(Node, Peer, Now, lists:member(Node, Wanted), Acc) end,
                   S, S#state.peers),
    S2 = lists:foldl(fun interest/2, S1, [N || N <- partisan_nif:reply_nodes(), N =/= partisan:node()]),
    tick(S2).

probe(Node, _, _, false, S) ->
    S#state{peers = maps:remove(Node, S#state.peers)};
probe(Node, Peer, Now, true, S = #state{peers = Peers, interval = Interval, timeout = Timeout}) ->
    case partisan:is_connected(Node) of
        true ->
            S#state{peers = Peers#{Node := Peer#peer{last_seen = Now}}};
        false when Now - Peer#peer.last_seen > Timeout ->
            lost(Node, S);
        false when Peer#peer.pinged_at =:= undefined; Now - Peer#peer.pinged_at >= Interval ->
            ping(Node, S);
        false ->
            S
    end.

%% Nodes with monitors, watches or waiting calls.
wanted(#state{out = Out, in = In, owners = Owners}) ->
    lists:usort([N || #out{node = N} <- maps:values(Out)] ++
                [N || #in{node = N} <- maps:values(In)] ++
                [N || {_, _, W} <- maps:values(Owners), N <- maps:keys(W)] ++
                partisan_nif:reply_nodes()).

%% On a partial overlay the probe runs all the time: calls may wait on any node.
tick(S = #state{full_mesh = true}) -> S;
tick(S = #state{ticking = true}) -> S;
tick(S = #state{interval = Interval}) ->
    erlang:send_after(Interval, self(), probe),
    S#state{ticking = true}.

%% -- helpers -------------------------------------------------------------------

to_peer(Node, Msg, Opts) ->
    partisan_otp:send(Node, ?MODULE, Msg, Opts).

now_ms() -> erlang:monotonic_time(millisecond).
