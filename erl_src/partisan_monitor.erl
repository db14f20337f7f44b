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
%% Every monitor request is acknowledged with the incarnation of the target node's monitor
%% process (a restart of that node, or of its partisan application, makes a new one). So a
%% monitor is tied to one incarnation: when a newer one shows up (in an answer, a ping, or the
%% greeting a monitor process sends when it starts), the monitors, node watches and calls of the
%% older one end with `noconnection', even if the node linked up again at once. A request that is
%% not acknowledged within `monitor_probe_timeout' (its node died before it arrived) ends the
%% same way. No entry outlives either side: `info/0' gives the table sizes.
-module(partisan_monitor).
-behaviour(gen_server).

-export([start_link/0, monitor/2, demonitor/2, monitor_node/2, monitor_nodes/2, info/0,
         server_channel/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(TAG, '$partisan_monitor').
%% Server pid -> the channel its answers to remote callers take (read by the call relays).
-define(SERVER_CHANNELS, partisan_server_channels).

-record(out, {owner :: pid(), node :: node(), object :: term(), returned :: term(),
              %% The target node's incarnation, from its acknowledgement; until then, the time by
              %% which it must arrive.
              incarnation :: integer() | undefined,
              ack_deadline :: integer() | undefined,
              %% The owner's `monitor/2' call, answered once the monitor is set (or has fired).
              caller :: gen_server:from() | undefined}).
-record(in, {node :: node(), ref :: reference(), channel :: atom(), key :: pid() | undefined,
             incarnation :: integer()}).
-record(peer, {last_seen :: integer(),
               pinged_at :: integer() | undefined}).
-record(state, {
    out = #{} :: #{reference() => #out{}},
    in = #{} :: #{reference() => #in{}},
    in_index = #{} :: #{{node(), reference()} => reference()},
    %% Local processes holding monitors or node watches: their monitor, their monitors' refs,
    %% and how many watches per node.
    owners = #{} :: #{pid() => {reference(), #{reference() => true}, #{node() => pos_integer()}}},
    peers = #{} :: #{node() => #peer{}},
    %% The incarnation last seen of every node heard from.
    incarnations = #{} :: #{node() => integer()},
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
%% the monitor reference (a remote reference when `Target' is one, as in Partisan v5) once the
%% target's node has set the monitor (or at once with a `DOWN' on its way, when it cannot), so
%% the target receives whatever the caller sends it next with the monitor in place. `Opts' may
%% name the `{channel, C}' the monitor's messages use. When the monitor layer is not running, the
%% reference gets an immediate `DOWN' with reason `notalive'.
-spec monitor(pid() | {atom(), node()} | partisan_remote_ref:remote_ref(), [term()] | map()) -> term().
monitor(Target, Opts) ->
    Channel = partisan_otp:channel(Opts),
    %% `release': the target waits (see partisan:spawn_monitor/4) until its monitor is set.
    Release = proplists:get_value(release, Opts, false),
    try gen_server:call(?MODULE, {monitor, self(), Target, Channel, Release}, infinity)
    catch exit:_ ->
        %% The monitor layer is not running (or stopped meanwhile).
        Ref = make_ref(),
        self() ! {'DOWN', Ref, process, Target, notalive},
        Ref
    end.

%% @doc Removes a monitor set with `monitor/2' by the caller. `flush' drops its `DOWN' if it
%% already arrived; `info' makes the result tell whether the monitor was still active.
-spec demonitor(term(), [flush | info]) -> boolean().
demonitor(Ref, Opts) ->
    Active = try gen_server:call(?MODULE, {demonitor, self(), Ref}, infinity)
             catch exit:_ -> false
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
-spec init([]) -> {ok, #state{}}.
init([]) ->
    process_flag(trap_exit, true),
    ok = partisan_peer_service_events:monitor_nodes(self(), true, []),
    ?SERVER_CHANNELS = ets:new(?SERVER_CHANNELS, [named_table, protected, {read_concurrency, true}]),
    S = #state{full_mesh = partisan_otp:is_full_mesh(),
               incarnation = erlang:system_time(microsecond),
               interval = partisan_config:get(monitor_probe_interval, 1000),
               timeout = partisan_config:get(monitor_probe_timeout, 3000)},
    %% Whatever a predecessor of this process watched is gone: tell the linked nodes.
    _ = [to_peer(N, {?TAG, hello, partisan:node(), S#state.incarnation}, #{}) || N <- partisan:nodes()],
    {ok, tick(S)}.

%% @private
-spec handle_call(term(), gen_server:from(), #state{}) ->
    {reply, term(), #state{}} | {noreply, #state{}}.
handle_call({monitor, Owner, Target, Channel, Release}, From, S) ->
    {Ref, Returned} = new_ref(Target),
    Node = partisan_otp:node_of(Target),
    S1 = own(Owner, Ref, S),
    Out = #out{owner = Owner, node = Node, object = Target, returned = Returned,
               ack_deadline = now_ms() + S#state.timeout, caller = From},
    S2 = S1#state{out = (S1#state.out)#{Ref => Out}},
    Request = {?TAG, monitor, partisan:node(), S#state.incarnation, Ref, partisan_otp:dest(Target),
               Channel, Release},
    %% The caller gets its reference once the target's node has set the monitor, so whatever it
    %% sends the target next finds the monitor in place (as Erlang's signal order promises).
    case to_peer(Node, Request, #{channel => Channel}) of
        ok -> {noreply, interest(Node, S2)};
        {error, _} -> {noreply, fire(Ref, noconnection, S2)}
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
-spec handle_cast(term(), #state{}) -> {noreply, #state{}}.
handle_cast(_, S) ->
    {noreply, S}.

%% @private
-spec handle_info(term(), #state{}) -> {noreply, #state{}}.
handle_info({?TAG, monitor, From, FromInc, WRef, Target, Channel, Release}, S) ->
    S1 = observe(From, FromInc, S),
    case maps:get(From, S1#state.incarnations) of
        %% A late request of an incarnation that is already gone: nobody waits for it.
        Current when FromInc < Current -> {noreply, S1};
        _ -> {noreply, interest(From, watch_local(From, FromInc, WRef, Target, Channel, Release, S1))}
    end;
handle_info({?TAG, ack, From, Incarnation, Ref}, S) ->
    {noreply, acked(From, Ref, Incarnation, observe(From, Incarnation, S))};
handle_info({?TAG, hello, From, Incarnation}, S) ->
    {noreply, observe(From, Incarnation, S)};
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
handle_info({?TAG, ping, From, FromInc}, S) ->
    _ = to_peer(From, {?TAG, pong, partisan:node(), S#state.incarnation}, #{}),
    {noreply, observe(From, FromInc, S)};
handle_info({?TAG, pong, From, Incarnation}, S) ->
    {noreply, pong(From, observe(From, Incarnation, S))};
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
    _ = partisan_otp:send_to(Dest, Msg, partisan_otp:channel(Opts)),
    {noreply, S};
handle_info(probe, S) ->
    {noreply, probe(S#state{ticking = false})};
handle_info(_, S) ->
    {noreply, S}.

%% @private
-spec terminate(term(), #state{}) -> ok.
terminate(_Reason, #state{out = Out}) ->
    %% Whoever waits on a remote process would wait forever: tell them the connection is gone.
    maps:foreach(fun(_, #out{owner = Owner, object = Object, returned = Returned}) ->
                         Owner ! {'DOWN', Returned, process, Object, noconnection}
                 end, Out).

%% -- remote side ---------------------------------------------------------------

%% Watches a local process for `From'; a target that is not a local process is reported at once.
watch_local(From, FromInc, WRef, Target, Channel, Release, S = #state{in = In, in_index = Index}) ->
    case local_target(Target) of
        {ok, Local, Key} ->
            Mref = erlang:monitor(process, Local),
            Release andalso is_pid(Key) andalso (Key ! '$partisan_release'),
            _ = to_peer(From, {?TAG, ack, partisan:node(), S#state.incarnation, WRef}, #{channel => Channel}),
            S#state{in = In#{Mref => #in{node = From, ref = WRef, channel = Channel, key = Key,
                                        incarnation = FromInc}},
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
        {Entry = #out{owner = Owner, object = Object, returned = Returned}, Out1} ->
            answer(Entry),
            Owner ! {'DOWN', Returned, process, Object, Reason},
            disown(Owner, Ref, S#state{out = Out1});
        error ->
            S
    end.

%% Answers the owner's monitor call if it still waits.
answer(#out{caller = undefined}) -> ok;
answer(#out{caller = From, returned = Returned}) -> gen_server:reply(From, Returned).

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
    S2 = forget_in([Mref || {Mref, #in{node = N}} <- maps:to_list(In), N =:= Node], S1),
    S3 = node_gone(Node, S2),
    S3#state{peers = maps:remove(Node, S3#state.peers),
             incarnations = maps:remove(Node, S3#state.incarnations)}.

%% Stops watching local processes for a node that is gone.
forget_in(Mrefs, S = #state{in = In, in_index = Index}) ->
    lists:foldl(fun(Mref, Acc = #state{in = I, in_index = X}) ->
                        erlang:demonitor(Mref, [flush]),
                        #in{node = N, ref = WRef} = maps:get(Mref, I),
                        Acc#state{in = maps:remove(Mref, I), in_index = maps:remove({N, WRef}, X)}
                end, S#state{in = In, in_index = Index}, Mrefs).

%% What depends on a node as a whole: node watches get `nodedown', waiting calls end, relays
%% forget its callers.
node_gone(Node, S) ->
    Owners = maps:fold(fun(Pid, {Mref, Refs, Watches}, Acc) ->
                               case maps:take(Node, Watches) of
                                   {Count, Watches1} ->
                                       _ = [Pid ! {nodedown, Node} || _ <- lists:seq(1, Count)],
                                       keep_owner(Pid, {Mref, Refs, Watches1}, Acc);
                                   error -> Acc
                               end
                       end, S#state.owners, S#state.owners),
    _ = partisan_nif:fail_replies(Node, noconnection),
    ok = partisan_call_relay:node_lost(Node),
    S#state{owners = Owners}.

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
            _ = to_peer(Node, {?TAG, ping, partisan:node(), S#state.incarnation}, #{}),
            S#state{peers = Peers#{Node := Peer#peer{pinged_at = now_ms()}}};
        _ ->
            S
    end.

pong(Node, S = #state{peers = Peers}) ->
    case Peers of
        #{Node := Peer} ->
            S#state{peers = Peers#{Node := Peer#peer{last_seen = now_ms(), pinged_at = undefined}}};
        _ ->
            S
    end.

%% Every message of a monitor process carries its incarnation (its start time, so a later
%% incarnation is larger). A node whose monitor process is newer than the one seen before has
%% restarted (or restarted partisan): what it watched for us, and what we watched for it,
%% belongs to its old incarnation. A message from an older one is late and changes nothing.
observe(Node, Incarnation, S = #state{incarnations = Known}) ->
    case Known of
        #{Node := Seen} when Incarnation =< Seen -> S;
        #{Node := _} -> restarted(Node, Incarnation, S#state{incarnations = Known#{Node := Incarnation}});
        _ -> S#state{incarnations = Known#{Node => Incarnation}}
    end.

restarted(Node, Incarnation, S = #state{out = Out, in = In}) ->
    Stale = [Ref || {Ref, #out{node = N, incarnation = I}} <- maps:to_list(Out),
                    N =:= Node, I =/= undefined, I =/= Incarnation],
    S1 = lists:foldl(fun(Ref, Acc) -> fire(Ref, noconnection, Acc) end, S, Stale),
    Gone = [Mref || {Mref, #in{node = N, incarnation = I}} <- maps:to_list(In), N =:= Node, I =/= Incarnation],
    S2 = forget_in(Gone, S1),
    node_gone(Node, S2).

acked(Node, Ref, Incarnation, S = #state{out = Out}) ->
    Current = maps:get(Node, S#state.incarnations),
    case Out of
        #{Ref := #out{incarnation = undefined}} when Incarnation < Current ->
            %% Set by an incarnation that is already gone.
            fire(Ref, noconnection, S);
        #{Ref := Entry = #out{incarnation = undefined}} ->
            answer(Entry),
            S#state{out = Out#{Ref := Entry#out{incarnation = Incarnation, ack_deadline = undefined,
                                                caller = undefined}}};
        #{Ref := _} ->
            S;
        _ ->
            %% Given up (ack too late) or removed meanwhile: the target's node forgets it too.
            _ = to_peer(Node, {?TAG, demonitor, partisan:node(), Ref}, #{}),
            S
    end.

%% Every interval: nodes that matter are kept if linked or answering, lost after the timeout;
%% nodes that no longer matter are dropped.
probe(S = #state{full_mesh = true}) ->
    tick(expire_acks(S));
probe(S) ->
    Now = now_ms(),
    Wanted = wanted(S),
    %% Neighbours of the overlay, not every node with a socket open (HyParView opens transient
    %% links to non-neighbours).
    Linked = partisan:nodes(),
    S1 = maps:fold(fun(Node, Peer, Acc) ->
                           probe(Node, Peer, Now, lists:member(Node, Wanted), lists:member(Node, Linked), Acc)
                   end, S, S#state.peers),
    S2 = lists:foldl(fun interest/2, S1, [N || N <- partisan_nif:reply_nodes(), N =/= partisan:node()]),
    tick(expire_acks(S2)).

%% A monitor request that was never acknowledged did not reach its node (it died, or no path
%% was left): noconnection.
expire_acks(S = #state{out = Out}) ->
    Now = now_ms(),
    Late = [Ref || {Ref, #out{ack_deadline = D}} <- maps:to_list(Out), D =/= undefined, D < Now],
    lists:foldl(fun(Ref, Acc) -> fire(Ref, noconnection, Acc) end, S, Late).

probe(Node, _, _, false, _, S) ->
    S#state{peers = maps:remove(Node, S#state.peers)};
probe(Node, Peer, Now, true, Linked, S = #state{peers = Peers, interval = Interval, timeout = Timeout}) ->
    case Linked of
        %% A neighbour is alive; it is still asked now and then, to learn about a restart whose
        %% greeting was missed.
        true when Peer#peer.pinged_at =:= undefined; Now - Peer#peer.pinged_at >= Timeout ->
            ping(Node, S#state{peers = Peers#{Node := Peer#peer{last_seen = Now}}});
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

%% The probe runs all the time: on a partial overlay calls may wait on any node, and on every
%% overlay monitor requests wait for their acknowledgement.
tick(S = #state{ticking = true}) -> S;
tick(S = #state{interval = Interval}) ->
    erlang:send_after(Interval, self(), probe),
    S#state{ticking = true}.

%% -- helpers -------------------------------------------------------------------

to_peer(Node, Msg, Opts) ->
    partisan_otp:send(Node, ?MODULE, Msg, Opts).

now_ms() -> erlang:monotonic_time(millisecond).
