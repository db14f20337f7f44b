%% @doc Partisan's Erlang-like API: nodes, messaging and monitoring over the Rust data plane.
%%
%% Sending never goes through an Erlang process: `forward_message/4' resolves the destination in
%% the caller and calls the NIF, which encodes the message and queues it on the connection of the
%% channel chosen by the partition key (or the caller's pid), then returns. A message to this node
%% is delivered with `erlang:send/2'.
%%
%% Sending to a node that is not connected on the channel returns `{error, not_connected}' at
%% once; messages are never queued for a node that is not connected (retry after `on_up', or use
%% `partisan_peer_service:sync_join/1'). A full connection queue returns `{error, queue_full}'.
%%
%% Bad arguments: every function here that returns `ok | {error, _}' returns
%% `{error, Reason}' for them and never raises (`{bad_node, X}', `{unknown_channel, X}',
%% `bad_destination', `{bad_options, X}', `{bad_partition_key, X}'); functions that return a plain
%% value (`is_connected/1,2', `node/1', ...) raise `badarg', like the BIFs they mirror.
-module(partisan).

-compile({no_auto_import, [node/0, node/1, nodes/0, nodes/1, is_pid/1, is_reference/1,
                           self/0, make_ref/0, whereis/1, send/2, send/3, monitor/2, monitor/3,
                           demonitor/1, demonitor/2, monitor_node/2, monitor_node/3, spawn/2,
                           spawn/4, spawn_monitor/2, spawn_monitor/4, exit/2,
                           is_process_alive/1, process_info/1, process_info/2, send_after/3,
                           send_after/4, cancel_timer/1, cancel_timer/2]}).

-export([start/0, stop/0]).
-export([node/0, node/1, nodes/0, nodes/1, node_spec/0, nodestring/0, is_alive/0,
         is_connected/1, is_connected/2, is_fully_connected/1, join/1, leave/0, leave/1,
         disconnect_node/1, default_channel/0, channel_opts/1, stats/0]).
-export([send/2, send/3, forward_message/2, forward_message/3, forward_message/4,
         cast_message/2, cast_message/3, cast_message/4]).
-export([self/0, make_ref/0, is_pid/1, is_reference/1, is_local/1, whereis/1,
         monitor_nodes/1, monitor_nodes/2]).
-export([monitor/1, monitor/2, monitor/3, demonitor/1, demonitor/2, monitor_node/2,
         monitor_node/3, spawn/2, spawn/4, spawn_monitor/2, spawn_monitor/4, exit/2,
         is_process_alive/1, process_info/1, process_info/2, send_after/3, send_after/4,
         cancel_timer/1, cancel_timer/2, kill_connections/1, node_spec/1, node_spec/2,
         broadcast/2]).
-export([spawn_released/3, send_interposed/4]).

%% Remote references (v5): self/1, is_self/1, is_local_pid/1,2, is_local_name/1,2,
%% is_local_reference/1,2.
-export([self/1, is_self/1, is_local_pid/1, is_local_pid/2, is_local_name/1, is_local_name/2,
         is_local_reference/1, is_local_reference/2]).

-type node_spec() :: #{name := node(),
                       listen_addrs := [#{ip := inet:ip_address(), port := inet:port_number()}],
                       channels := #{atom() => partisan_config:channel_opts()}}.
-type server_ref() :: pid() | atom() | {atom(), node()} | partisan_remote_ref:remote_ref().
-type forward_opts() :: #{channel => atom(), partition_key => non_neg_integer(),
                          causal_label => atom(), atom() => term()}
                      | [{atom(), term()}].
-type send_error() :: {error, not_connected | queue_full | not_started | bad_destination
                              | {unknown_channel, term()} | {unsupported_option, atom()}
                              | {unknown_causal_label, term()}
                              | {bad_partition_key, term()} | {bad_node, term()}
                              | {bad_options, term()}
                              | {message_too_large, non_neg_integer(), non_neg_integer()}}.
-export_type([node_spec/0, server_ref/0, forward_opts/0]).

%% Binaries at least this large are encoded on a dirty scheduler (over ~1 ms of copying).
-define(DIRTY_BYTES, 512 * 1024).
%% How long the process functions (`is_process_alive/1', `whereis/1', ...) wait for another node.
-define(REMOTE_TIMEOUT, 5000).

%% @doc Starts the `partisan' application and its dependencies.
-spec start() -> {ok, [atom()]} | {error, term()}.
start() -> application:ensure_all_started(partisan).

%% @doc Stops the `partisan' application: every connection and data plane thread is closed.
-spec stop() -> ok | {error, term()}.
stop() -> application:stop(partisan).

%% @doc This partisan node's name.
-spec node() -> node().
node() -> partisan_config:get(name, erlang:node()).

%% @doc The node of a pid, reference, port or remote reference.
-spec node(pid() | reference() | port() | partisan_remote_ref:remote_ref()) -> node().
node(P) when erlang:is_pid(P); erlang:is_reference(P); erlang:is_port(P) -> erlang:node(P);
node(Ref) -> partisan_remote_ref:node(Ref).

%% @doc The connected peers, this node excluded (like `erlang:nodes/0').
-spec nodes() -> [node()].
nodes() -> partisan_nif:connected().

%% @doc Nodes by kind: `this', `known' (members), `connected' and `visible' (connected), `hidden' ([]).
-spec nodes(this | known | visible | connected | hidden) -> [node()].
nodes(this) -> [?MODULE:node()];
nodes(known) -> partisan_nif:members() -- [?MODULE:node()];
nodes(visible) -> nodes();
nodes(connected) -> nodes();
nodes(hidden) -> [].

%% @doc This node's spec: name, bound listen addresses and channels. Pass it to `join/1' elsewhere.
-spec node_spec() -> node_spec().
node_spec() -> partisan_peer_service_manager:node_spec().

%% @doc This node's name as a binary.
-spec nodestring() -> binary().
nodestring() -> atom_to_binary(?MODULE:node()).

%% @doc Whether the partisan data plane is running.
-spec is_alive() -> boolean().
is_alive() -> erlang:is_pid(erlang:whereis(partisan_peer_service_manager)).

%% @doc Whether any connection to `Node' is up. Raises `badarg' if `Node' is not an atom.
-spec is_connected(node()) -> boolean().
is_connected(Node) when is_atom(Node) -> partisan_nif:is_connected(Node, '$any');
is_connected(Node) -> erlang:error(badarg, [Node]).

%% @doc Whether a connection of `Channel' to `Node' is up. Raises `badarg' if either is not an
%% atom.
-spec is_connected(node(), atom()) -> boolean().
is_connected(Node, Channel) when is_atom(Node), is_atom(Channel) ->
    partisan_nif:is_connected(Node, Channel);
is_connected(Node, Channel) -> erlang:error(badarg, [Node, Channel]).

%% @doc Whether every connection (all channels × parallelism) to `Node' is up. Raises `badarg'
%% if `Node' is neither an atom nor a node spec.
-spec is_fully_connected(node() | node_spec()) -> boolean().
is_fully_connected(#{name := Node}) when is_atom(Node) -> partisan_nif:is_fully_connected(Node);
is_fully_connected(Node) when is_atom(Node) -> partisan_nif:is_fully_connected(Node);
is_fully_connected(Node) -> erlang:error(badarg, [Node]).

%% @doc Joins the cluster of the node `Spec' describes. See `partisan_peer_service:join/1'.
-spec join(node_spec() | [node_spec()]) -> ok | {error, term()}.
join(Spec) -> partisan_peer_service:join(Spec).

%% @doc This node leaves its cluster.
-spec leave() -> ok | {error, term()}.
leave() -> partisan_peer_service:leave().

%% @doc Removes `Node' from the cluster.
-spec leave(node() | node_spec()) -> ok | {error, term()}.
leave(Node) -> partisan_peer_service:leave(Node).

%% @doc Removes `Node' from the cluster and closes its connections.
-spec disconnect_node(node()) -> boolean().
disconnect_node(Node) -> partisan_peer_service:leave(Node) =:= ok.

%% @doc The default channel, `undefined'.
-spec default_channel() -> undefined.
default_channel() -> partisan_config:default_channel().

%% @doc The options of a configured channel.
-spec channel_opts(atom()) -> partisan_config:channel_opts() | undefined.
channel_opts(Channel) -> maps:get(Channel, partisan_config:channels(), undefined).

%% @doc Data plane counters (messages, drops, auth failures, bad frames, ...).
-spec stats() -> #{atom() => non_neg_integer()}.
stats() -> partisan_nif:stats().

%% @doc Sends `Msg' to `Dest' (pid, remote ref, `{Name, Node}' or local name).
-spec send(server_ref(), term()) -> ok | send_error().
send(Dest, Msg) -> forward_message(Dest, Msg, #{}).

%% @doc `send/2' with options (`channel', `partition_key').
-spec send(server_ref(), term(), forward_opts()) -> ok | send_error().
send(Dest, Msg, Opts) -> forward_message(Dest, Msg, Opts).

%% @doc Forwards `Msg' to `ServerRef' on the default channel.
-spec forward_message(server_ref(), term()) -> ok | send_error().
forward_message(ServerRef, Msg) -> forward_message(ServerRef, Msg, #{}).

%% @doc Forwards `Msg' to `ServerRef', whose node is taken from the reference itself.
-spec forward_message(server_ref(), term(), forward_opts()) -> ok | send_error().
forward_message(ServerRef, Msg, Opts) ->
    case node_of(ServerRef) of
        {ok, Node} -> forward_message(Node, ServerRef, Msg, Opts);
        error -> {error, bad_destination}
    end.

%% @doc Forwards `Msg' to `ServerRef' on `Node'. Options (a map or a proplist): `channel'
%% (default `undefined'), `partition_key' (non-negative integer; messages with the same key keep
%% their order), `transitive' (`true': when `Node' is not a neighbour, relay the message through
%% the overlay), `ack' (`true': delivered exactly once while both nodes live, across lost
%% connections; it waits for a node not connected yet, up to `max_unacked_bytes' per node, then
%% `{error, queue_full}'; on overlays other than the full mesh it travels through the overlay
%% on the default channel, acknowledged end to end; see the README), `causal_label' (a label of `causal_labels': delivered
%% in causal order with the label's other messages, see `partisan_causality_backend').
%% Interposition funs and `egress_delay' apply here (see `partisan_interposition'). Without
%% `ack', `ok' means the message is queued on a live connection, not that it arrived (see the
%% README's semantics). A message whose frame exceeds the receiver's `max_frame_size' returns
%% `{error, {message_too_large, Size, Max}}'.
-spec forward_message(node(), server_ref(), term(), forward_opts()) -> ok | send_error().
forward_message(Node, ServerRef, Msg, Opts) ->
    case options(Opts) of
        {ok, _} when not is_atom(Node) -> {error, {bad_node, Node}};
        {ok, O} ->
            case Node =:= ?MODULE:node() of
                true -> send_local(ServerRef, Msg, maps:get(channel, O, undefined));
                false -> send_remote(Node, ServerRef, Msg, O)
            end;
        {error, _} = Error ->
            Error
    end.

%% @doc Casts `Msg' to a `gen_server'-like process: delivers `{'$gen_cast', Msg}'.
-spec cast_message(server_ref(), term()) -> ok | send_error().
cast_message(ServerRef, Msg) -> forward_message(ServerRef, {'$gen_cast', Msg}).

%% @doc `cast_message/2' with options.
-spec cast_message(server_ref(), term(), forward_opts()) -> ok | send_error().
cast_message(ServerRef, Msg, Opts) -> forward_message(ServerRef, {'$gen_cast', Msg}, Opts).

%% @doc `cast_message/2' to `ServerRef' on `Node', with options.
-spec cast_message(node(), server_ref(), term(), forward_opts()) -> ok | send_error().
cast_message(Node, ServerRef, Msg, Opts) ->
    forward_message(Node, ServerRef, {'$gen_cast', Msg}, Opts).

%% @doc A remote reference to the calling process.
-spec self() -> partisan_remote_ref:remote_ref().
self() -> partisan_remote_ref:from_term(erlang:self(), ?MODULE:node()).

%% @doc A new reference, as a remote reference of this node in the configured format (as in
%% Partisan v5), so it can travel to any peer and be matched when it comes back.
-spec make_ref() -> partisan_remote_ref:remote_ref().
make_ref() -> partisan_remote_ref:from_term(erlang:make_ref(), ?MODULE:node()).

%% @doc Whether `X' is a pid or a remote reference of a process.
-spec is_pid(term()) -> boolean().
is_pid(X) when erlang:is_pid(X) -> true;
is_pid(X) -> partisan_remote_ref:is_type(X) andalso partisan_remote_ref:is_pid(X).

%% @doc Whether `X' is a reference or a remote reference of one.
-spec is_reference(term()) -> boolean().
is_reference(X) when erlang:is_reference(X) -> true;
is_reference(X) -> partisan_remote_ref:is_type(X) andalso partisan_remote_ref:is_reference(X).

%% @doc Whether a pid, reference, port or remote reference belongs to this node.
-spec is_local(term()) -> boolean().
is_local(X) when erlang:is_pid(X); erlang:is_reference(X); erlang:is_port(X) ->
    erlang:node(X) =:= erlang:node();
is_local(X) -> partisan_remote_ref:is_local(X, ?MODULE:node()).

%% @doc The pid registered as `Name': on this node for an atom; on `Node' for `{Name, Node}' or
%% a remote reference of a name (then a remote reference of the pid is returned). `undefined'
%% when nothing is registered there or the node cannot be reached.
-spec whereis(atom() | {atom(), node()} | partisan_remote_ref:remote_ref()) ->
    pid() | partisan_remote_ref:remote_ref() | undefined.
whereis(Name) when is_atom(Name) ->
    erlang:whereis(Name);
whereis(Target) ->
    Node = partisan_otp:node_of(Target),
    Pid = case Node =:= ?MODULE:node() of
        true -> erlang:whereis(name_of(Target));
        false -> on_node(Node, partisan_otp, whereis_local, [partisan_otp:dest(Target)], undefined)
    end,
    case {Pid, Target} of
        {undefined, _} -> undefined;
        {_, {_, _}} -> Pid;
        _ -> partisan_remote_ref:from_term(Pid, Node)
    end.

name_of({Name, _}) -> Name;
name_of(Ref) -> partisan_remote_ref:to_name(Ref).

%% @doc Subscribes the caller to `{nodeup, Node}' and `{nodedown, Node}' messages.
-spec monitor_nodes(boolean()) -> ok | {error, {bad_flag, term()}}.
monitor_nodes(Flag) -> monitor_nodes(Flag, []).

%% @doc `monitor_nodes/1' with `net_kernel:monitor_nodes/2' options (`nodedown_reason',
%% `{node_type, _}' give the `{nodeup, Node, Info}' form).
-spec monitor_nodes(boolean(), [term()]) -> ok | {error, {bad_flag, term()} | {bad_options, term()}}.
monitor_nodes(Flag, Opts) when is_boolean(Flag), is_list(Opts) ->
    partisan_peer_service_events:monitor_nodes(erlang:self(), Flag, Opts);
monitor_nodes(Flag, _Opts) when not is_boolean(Flag) ->
    {error, {bad_flag, Flag}};
monitor_nodes(_Flag, Opts) ->
    {error, {bad_options, Opts}}.

%% -- processes on any node -----------------------------------------------------

%% @doc `monitor(process, Item)'.
-spec monitor(term()) -> reference() | partisan_remote_ref:remote_ref().
monitor(Item) -> monitor(process, Item, []).

%% @doc `monitor(Type, Item, [])'.
-spec monitor(process | port | time_offset, term()) -> reference() | partisan_remote_ref:remote_ref().
monitor(Type, Item) -> monitor(Type, Item, []).

%% @doc Monitors a process on any node, like `erlang:monitor/3': a pid, a local name,
%% `{Name, Node}' or a remote reference. The caller gets `{'DOWN', Ref, process, Item, Reason}'
%% with the process's exit reason, `noproc' if it does not exist, `noconnection' if its node is
%% lost (see `partisan_monitor'). For a remote reference `Ref' is a remote reference too (as in
%% Partisan v5). `Opts' may hold `{channel, C}' for the monitor's messages; `port' and
%% `time_offset' monitors are Erlang's.
-spec monitor(process | port | time_offset, term(), [term()]) -> reference() | partisan_remote_ref:remote_ref().
monitor(process, Item, Opts) when is_list(Opts) ->
    case partisan_otp:resolve(Item) of
        {local, Local} -> erlang:monitor(process, Local, erlang_opts(Opts));
        {remote, _, _} -> partisan_monitor:monitor(Item, Opts);
        undefined -> erlang:error(badarg, [process, Item, Opts])
    end;
monitor(Type, Item, Opts) when Type =:= port; Type =:= time_offset ->
    erlang:monitor(Type, Item, erlang_opts(Opts)).

erlang_opts(Opts) -> [O || O <- Opts, not (is_tuple(O) andalso element(1, O) =:= channel)].

%% @doc Removes a monitor set with `monitor/1,2,3'. Always `true'.
-spec demonitor(reference() | partisan_remote_ref:remote_ref()) -> true.
demonitor(Ref) ->
    _ = demonitor(Ref, []),
    true.

%% @doc Removes a monitor; `flush' removes its `DOWN' if it already arrived, `info' makes the
%% result tell whether the monitor was still active (as `erlang:demonitor/2').
-spec demonitor(reference() | partisan_remote_ref:remote_ref(), [flush | info]) -> boolean().
demonitor(Ref, Opts) when erlang:is_reference(Ref) ->
    case erlang:demonitor(Ref, [info | Opts -- [info]]) of
        true -> true;
        %% Not (or no longer) a local monitor: it may be one of ours on a remote process.
        false -> partisan_monitor:demonitor(Ref, Opts)
    end;
demonitor(Ref, Opts) ->
    partisan_monitor:demonitor(Ref, Opts).

%% @doc `monitor_node(Node, Flag, [])'.
-spec monitor_node(node() | node_spec(), boolean()) -> true.
monitor_node(Node, Flag) -> monitor_node(Node, Flag, []).

%% @doc Turns monitoring of a node on or off for the caller (`erlang:monitor_node/3'):
%% `{nodedown, Node}' arrives when the node is lost, at once if it cannot be reached. Each call
%% with `true' adds one monitor, each call with `false' removes one. Options are Erlang's and
%% have no effect here.
-spec monitor_node(node() | node_spec(), boolean(), [term()]) -> true.
monitor_node(#{name := Node}, Flag, Opts) ->
    monitor_node(Node, Flag, Opts);
monitor_node(Node, Flag, _Opts) when is_atom(Node), is_boolean(Flag) ->
    case Node =:= ?MODULE:node() of
        true -> true;
        false -> partisan_monitor:monitor_node(Node, Flag)
    end.

%% @doc Spawns `Fun' on `Node' and returns its pid. When `Node' cannot be reached the pid is of a
%% local process that exits at once with reason `noconnection' (as `erlang:spawn/2' does).
-spec spawn(node(), fun(() -> term())) -> pid().
spawn(Node, Fun) when is_function(Fun, 0) ->
    spawn(Node, erlang, apply, [Fun, []]).

%% @doc Spawns `M:F(A)' on `Node' and returns its pid (see `spawn/2').
-spec spawn(node(), module(), atom(), [term()]) -> pid().
spawn(Node, M, F, A) ->
    case Node =:= ?MODULE:node() of
        true -> erlang:spawn(M, F, A);
        false -> on_node(Node, erlang, spawn, [M, F, A], fun unreachable/0)
    end.

%% @doc Spawns `Fun' on `Node' and monitors it: `{Pid, MonitorRef}'.
-spec spawn_monitor(node(), fun(() -> term())) -> {pid(), reference()}.
spawn_monitor(Node, Fun) when is_function(Fun, 0) ->
    spawn_monitor(Node, erlang, apply, [Fun, []]).

%% @doc Spawns `M:F(A)' on `Node' and monitors it: `{Pid, MonitorRef}'. The process starts only
%% once the monitor is set, so even an instant exit is reported with its reason.
-spec spawn_monitor(node(), module(), atom(), [term()]) -> {pid(), reference()}.
spawn_monitor(Node, M, F, A) ->
    case Node =:= ?MODULE:node() of
        true ->
            erlang:spawn_monitor(M, F, A);
        false ->
            case on_node(Node, ?MODULE, spawn_released, [M, F, A], undefined) of
                undefined -> erlang:spawn_monitor(fun unreachable/0);
                Pid -> {Pid, partisan_monitor:monitor(Pid, [{release, true}])}
            end
    end.

%% @private Runs on the target node of `spawn_monitor/4': the process waits until the monitor
%% layer has set its monitor and releases it.
-spec spawn_released(module(), atom(), [term()]) -> pid().
spawn_released(M, F, A) ->
    erlang:spawn(fun() -> receive '$partisan_release' -> erlang:apply(M, F, A) end end).

-spec unreachable() -> no_return().
unreachable() -> erlang:exit(noconnection).

%% @doc Sends an exit signal to a process on any node (`erlang:exit/2'). Always `true'; as with
%% Erlang's, a process that cannot be reached is not an error.
-spec exit(pid() | partisan_remote_ref:remote_ref(), term()) -> true.
exit(Pid, Reason) when erlang:is_pid(Pid), erlang:node(Pid) =:= erlang:node() ->
    erlang:exit(Pid, Reason);
exit(Target, Reason) ->
    case partisan_otp:resolve(Target) of
        {local, Local} -> erlang:exit(to_pid(Local), Reason);
        {remote, Node, Dest} -> _ = partisan_gen:cast_apply(Node, partisan_otp, exit_local, [Dest, Reason]), true;
        undefined -> true
    end.

to_pid(Pid) when erlang:is_pid(Pid) -> Pid;
to_pid(Name) -> erlang:whereis(Name).

%% @doc Whether a process on any node is alive; `false' when its node cannot be reached.
-spec is_process_alive(pid() | partisan_remote_ref:remote_ref()) -> boolean().
is_process_alive(Target) ->
    on_process(Target, is_process_alive, [], false).

%% @doc `erlang:process_info/1' for a process on any node; `undefined' for a process that is not
%% alive or whose node cannot be reached.
-spec process_info(pid() | partisan_remote_ref:remote_ref()) -> [tuple()] | undefined.
process_info(Target) ->
    on_process(Target, process_info, [], undefined).

%% @doc `erlang:process_info/2' for a process on any node.
-spec process_info(pid() | partisan_remote_ref:remote_ref(), atom() | [atom()]) -> term().
process_info(Target, Items) ->
    on_process(Target, process_info, [Items], undefined).

%% Runs erlang:F(Pid, Args...) where the process lives; `Unreachable' when its node is lost.
on_process(Target, F, Args, Unreachable) ->
    case partisan_otp:resolve(Target) of
        {local, Pid} when erlang:is_pid(Pid) -> erlang:apply(erlang, F, [Pid | Args]);
        {remote, Node, Dest} -> on_node(Node, partisan_otp, erlang_on_local, [Dest, F, Args], Unreachable);
        _ -> erlang:error(badarg, [Target | Args])
    end.

%% Runs M:F(A) on Node (5 s at most), returning `Unreachable' (or its value, if it is a fun)
%% when the node cannot be reached or does not answer.
on_node(Node, M, F, A, Unreachable) ->
    try partisan_gen:node_apply(Node, M, F, A, ?REMOTE_TIMEOUT)
    catch
        exit:{nodedown, _} -> unreachable(Unreachable);
        exit:timeout -> unreachable(Unreachable)
    end.

unreachable(Fun) when is_function(Fun, 0) -> erlang:spawn(Fun);
unreachable(Value) -> Value.

%% @doc `send_after(Time, Dest, Msg, [])'.
-spec send_after(non_neg_integer(), server_ref(), term()) -> reference().
send_after(Time, Dest, Msg) -> send_after(Time, Dest, Msg, []).

%% @doc Sends `Msg' to `Dest' on any node after `Time' ms (`erlang:send_after/4'); `Opts' are
%% Erlang's (`{abs, true}') and `forward_message' options (`channel', ...). Cancel with
%% `cancel_timer/1,2'.
-spec send_after(non_neg_integer(), server_ref(), term(), [term()]) -> reference().
send_after(Time, Dest, Msg, Opts) when is_list(Opts) ->
    {TimerOpts, FwdOpts} = lists:partition(fun(O) -> is_tuple(O) andalso element(1, O) =:= abs end, Opts),
    case partisan_otp:resolve(Dest) of
        {local, Local} -> erlang:send_after(Time, Local, Msg, TimerOpts);
        _ -> erlang:send_after(Time, partisan_monitor, {'$partisan_send_after', Dest, Msg, FwdOpts}, TimerOpts)
    end.

%% @doc Cancels a timer of `send_after/3,4' (`erlang:cancel_timer/1').
-spec cancel_timer(reference()) -> non_neg_integer() | false.
cancel_timer(Ref) -> erlang:cancel_timer(Ref).

%% @doc Cancels a timer of `send_after/3,4' (`erlang:cancel_timer/2': `async', `info').
-spec cancel_timer(reference(), [term()]) -> non_neg_integer() | false | ok.
cancel_timer(Ref, Opts) -> erlang:cancel_timer(Ref, Opts).

%% @doc Drops every connection to `Nodes' (a node or a list); the overlay makes them again after
%% `connection_interval', so this forces reconnection, not removal.
-spec kill_connections(node() | [node()]) -> ok.
kill_connections(Node) when is_atom(Node) ->
    kill_connections([Node]);
kill_connections(Nodes) when is_list(Nodes) ->
    lists:foreach(fun(N) -> _ = partisan_nif:partition(N, true), _ = partisan_nif:partition(N, false) end, Nodes).

%% @doc `node_spec(Node, #{})'.
-spec node_spec(node() | binary() | string()) -> {ok, node_spec()} | {error, term()}.
node_spec(Node) -> node_spec(Node, #{}).

%% @doc The spec of `Node': this node's, or asked of `Node' itself over Partisan (within
%% `rpc_timeout' ms, default 5000).
-spec node_spec(node() | binary() | string(), #{rpc_timeout => timeout()}) -> {ok, node_spec()} | {error, term()}.
node_spec(Node, Opts) when is_binary(Node) -> node_spec(binary_to_atom(Node), Opts);
node_spec(Node, Opts) when is_list(Node) -> node_spec(list_to_atom(Node), Opts);
node_spec(Node, Opts) when is_atom(Node), is_map(Opts) ->
    case Node =:= ?MODULE:node() of
        true ->
            {ok, node_spec()};
        false ->
            try partisan_gen:node_apply(Node, ?MODULE, node_spec, [], maps:get(rpc_timeout, Opts, ?REMOTE_TIMEOUT)) of
                Spec -> {ok, Spec}
            catch
                exit:{nodedown, _} -> {error, not_yet_connected};
                exit:timeout -> {error, timeout}
            end
    end.

%% @doc Broadcasts with Plumtree (`partisan_plumtree_broadcast:broadcast/2').
-spec broadcast(term(), module()) -> ok.
broadcast(Broadcast, Mod) -> partisan_plumtree_broadcast:broadcast(Broadcast, Mod).

%% -- remote references ------------------------------------------------------
%% Partisan v5's process identity helpers: each accepts the plain local term (pid, reference or
%% registered name) as well as a remote reference in any of the three formats.

%% @doc `self([])' is `self/0'; `self([cache])' computes the caller's remote reference once and
%% keeps it in the process dictionary (key `{partisan, self}'). The cached value is checked
%% against the caller's pid, so a dictionary inherited by another process (as the shell does
%% after a crash) is never returned for the wrong process.
-spec self([cache]) -> partisan_remote_ref:remote_ref().
self([]) ->
    ?MODULE:self();
self([cache]) ->
    Me = erlang:self(),
    case erlang:get({?MODULE, self}) of
        {Me, Ref} ->
            Ref;
        _ ->
            Ref = ?MODULE:self(),
            _ = erlang:put({?MODULE, self}, {Me, Ref}),
            Ref
    end;
self(Opts) ->
    error(badarg, [Opts]).

%% @doc Whether `X' (a pid or a remote reference) denotes the calling process. A name reference
%% of this node denotes the caller when that name is registered to it. Fails with `badarg' when
%% `X' is neither a pid nor a well-formed remote reference.
-spec is_self(pid() | partisan_remote_ref:remote_ref()) -> boolean().
is_self(X) when erlang:is_pid(X) -> X =:= erlang:self();
is_self(X) -> partisan_remote_ref:is_local_pid(X, erlang:self()).

%% @doc Whether `X' is a pid of this node, or a remote reference of one.
-spec is_local_pid(pid() | partisan_remote_ref:remote_ref()) -> boolean().
is_local_pid(X) when erlang:is_pid(X) -> erlang:node(X) =:= erlang:node();
is_local_pid(X) -> partisan_remote_ref:is_local_pid(X).

%% @doc Whether `X' (a pid or a remote reference) denotes the local pid `Pid'; see
%% `partisan_remote_ref:is_local_pid/2'. Fails with `badarg' when `Pid' is not a pid.
-spec is_local_pid(pid() | partisan_remote_ref:remote_ref(), pid()) -> boolean().
is_local_pid(X, Pid) when erlang:is_pid(X), erlang:is_pid(Pid) ->
    X =:= Pid andalso erlang:node(Pid) =:= erlang:node();
is_local_pid(X, Pid) ->
    partisan_remote_ref:is_local_pid(X, Pid).

%% @doc Whether `X' is a local registered name: any atom (a name is always local), or a name
%% reference of this node.
-spec is_local_name(atom() | partisan_remote_ref:remote_ref()) -> boolean().
is_local_name(X) when is_atom(X) -> true;
is_local_name(X) -> partisan_remote_ref:is_local_name(X).

%% @doc Whether `X' (an atom or a remote reference) denotes the local name `Name'. Fails with
%% `badarg' when `Name' is not an atom.
-spec is_local_name(atom() | partisan_remote_ref:remote_ref(), atom()) -> boolean().
is_local_name(X, Name) when is_atom(X), is_atom(Name) -> X =:= Name;
is_local_name(X, Name) -> partisan_remote_ref:is_local_name(X, Name).

%% @doc Whether `X' is a reference created on this node, or a remote reference of one.
-spec is_local_reference(reference() | partisan_remote_ref:remote_ref()) -> boolean().
is_local_reference(X) when erlang:is_reference(X) -> erlang:node(X) =:= erlang:node();
is_local_reference(X) -> partisan_remote_ref:is_local_reference(X).

%% @doc Whether `X' (a reference or a remote reference) denotes the local reference `Ref'.
%% Fails with `badarg' when `Ref' is not a reference.
-spec is_local_reference(reference() | partisan_remote_ref:remote_ref(), reference()) ->
    boolean().
is_local_reference(X, Ref) when erlang:is_reference(X), erlang:is_reference(Ref) ->
    X =:= Ref andalso erlang:node(Ref) =:= erlang:node();
is_local_reference(X, Ref) ->
    partisan_remote_ref:is_local_reference(X, Ref).

%% -- internal ---------------------------------------------------------------

node_of(Pid) when erlang:is_pid(Pid) -> {ok, erlang:node(Pid)};
node_of({Name, Node}) when is_atom(Name), is_atom(Node) -> {ok, Node};
node_of(Name) when is_atom(Name) -> {ok, ?MODULE:node()};
node_of(Ref) ->
    try partisan_remote_ref:node(Ref) of Node -> {ok, Node} catch error:badarg -> error end.

%% Forward options as a map, checked: a proplist (`{K, V}' or a bare `K' for `{K, true}'), or a
%% map; `channel' an atom, `partition_key' a non-negative integer (or `undefined': none).
options(Opts) when is_map(Opts) ->
    check_options(Opts);
options(Opts) when is_list(Opts) ->
    try maps:from_list([case O of {K, V} -> {K, V}; K when is_atom(K) -> {K, true} end
                        || O <- Opts]) of
        Map -> check_options(Map)
    catch
        error:_ -> {error, {bad_options, Opts}}
    end;
options(Opts) ->
    {error, {bad_options, Opts}}.

check_options(#{channel := C}) when not is_atom(C) ->
    {error, {unknown_channel, C}};
check_options(#{partition_key := K})
  when K =/= undefined andalso not (is_integer(K) andalso K >= 0) ->
    {error, {bad_partition_key, K}};
check_options(Opts) ->
    {ok, Opts}.

%% A local send checks the channel as the NIF does for remote ones, so a typo fails the same way
%% whatever the destination.
send_local(Dest, Msg, Channel) ->
    case is_map_key(Channel, partisan_config:get(channels, #{})) of
        true -> send_local(Dest, Msg);
        false -> {error, {unknown_channel, Channel}}
    end.

send_local(Dest, Msg) when erlang:is_pid(Dest); is_atom(Dest) ->
    try erlang:send(Dest, Msg) of _ -> ok catch error:badarg -> {error, bad_destination} end;
send_local({Name, _Node}, Msg) when is_atom(Name) ->
    send_local(Name, Msg);
send_local(Ref, Msg) ->
    try partisan_remote_ref:to_term(Ref) of
        Dest -> send_local(Dest, Msg)
    catch
        error:badarg -> {error, bad_destination}
    end.

send_remote(Node, ServerRef, Msg, Opts) ->
    %% Interposition funs and `egress_delay' (one persistent_term read when unset).
    case partisan_interposition:send_hooks() of
        false -> send_interposed(Node, ServerRef, Msg, Opts);
        true -> partisan_interposition:forward(Node, ServerRef, Msg, Opts)
    end.

%% @private
%% @doc A remote send past interposition: causal (`causal_label') or direct. Called by
%% `partisan_interposition' and `partisan_causality_backend' only.
-spec send_interposed(node(), server_ref(), term(), map()) -> ok | send_error().
send_interposed(Node, ServerRef, Msg, Opts = #{causal_label := Label}) when Label =/= undefined ->
    partisan_causality_backend:emit(Label, Node, ServerRef, Msg, Opts);
send_interposed(Node, ServerRef, Msg, Opts) ->
    send_remote_checked(Node, ServerRef, Msg, Opts).

is_set(K, Opts) ->
    maps:get(K, Opts, false) =/= false andalso maps:get(K, Opts, undefined) =/= undefined.

send_remote_checked(Node, ServerRef, Msg, Opts) ->
    Channel = maps:get(channel, Opts, undefined),
    Key = maps:get(partition_key, Opts, undefined),
    %% `retransmission' (v5) asks for what `ack' gives: acked messages are retransmitted.
    Acked = is_set(ack, Opts) orelse is_set(retransmission, Opts),
    case destination(ServerRef) of
        {ok, Dest} when Acked ->
            case partisan_otp:is_full_mesh() of
                true -> send_acked(Node, Channel, Key, Dest, Msg);
                false -> partisan_nif:send_acked_transitive(Node, Dest, Msg)
            end;
        {ok, Dest} when map_get(transitive, Opts) =:= true ->
            case partisan_nif:is_connected(Node, Channel) of
                true -> partisan_nif:send(Node, Channel, Key, Dest, Msg);
                false -> send_transitive(Node, Dest, Msg)
            end;
        {ok, Dest} when erlang:is_binary(Msg), byte_size(Msg) >= ?DIRTY_BYTES ->
            %% An alive VM's data plane sends large binaries by reference (no copy to wait
            %% for); a VM that is not alive scans each message for its pids.
            case erlang:is_alive() of
                true -> partisan_nif:send(Node, Channel, Key, Dest, Msg);
                false -> partisan_nif:send_dirty(Node, Channel, Key, Dest, Msg)
            end;
        {ok, Dest} ->
            partisan_nif:send(Node, Channel, Key, Dest, Msg);
        error ->
            {error, bad_destination}
    end.

%% `ack' where every member is linked: per link, on the channel asked for. As for a plain send,
%% an alive VM's data plane keeps large binaries by reference (until they are acknowledged).
send_acked(Node, Channel, Key, Dest, Msg) when erlang:is_binary(Msg), byte_size(Msg) >= ?DIRTY_BYTES ->
    case erlang:is_alive() of
        true -> partisan_nif:send_acked(Node, Channel, Key, Dest, Msg);
        false -> partisan_nif:send_acked_dirty(Node, Channel, Key, Dest, Msg)
    end;
send_acked(Node, Channel, Key, Dest, Msg) ->
    partisan_nif:send_acked(Node, Channel, Key, Dest, Msg).

%% Relays through the overlay. Where membership is global (every manager but HyParView, whose
%% views are partial), a node that is not a member is refused instead of relayed into the void.
send_transitive(Node, Dest, Msg) ->
    Partial = partisan_config:get(peer_service_manager, undefined) =:=
        partisan_hyparview_peer_service_manager,
    case Partial orelse lists:member(Node, partisan_nif:members()) of
        true -> partisan_nif:send_transitive(Node, Dest, Msg);
        false -> {error, not_connected}
    end.

destination(Pid) when erlang:is_pid(Pid) -> {ok, Pid};
destination({Name, _Node}) when is_atom(Name) -> {ok, Name};
destination(Name) when is_atom(Name) -> {ok, Name};
destination(Ref) ->
    try partisan_remote_ref:target(Ref) of
        {pid, Id, Serial} -> {ok, {pid_id, Id, Serial}};
        {name, Name} -> {ok, Name};
        _ -> error
    catch
        error:badarg -> error
    end.
