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
                           self/0, make_ref/0, whereis/1, send/2, send/3]}).

-export([start/0, stop/0]).
-export([node/0, node/1, nodes/0, nodes/1, node_spec/0, nodestring/0, is_alive/0,
         is_connected/1, is_connected/2, is_fully_connected/1, join/1, leave/0, leave/1,
         disconnect_node/1, default_channel/0, channel_opts/1, stats/0]).
-export([send/2, send/3, forward_message/2, forward_message/3, forward_message/4,
         cast_message/2, cast_message/3, cast_message/4]).
-export([self/0, make_ref/0, is_pid/1, is_reference/1, is_local/1, whereis/1,
         monitor_nodes/1, monitor_nodes/2]).

-type node_spec() :: #{name := node(),
                       listen_addrs := [#{ip := inet:ip_address(), port := inet:port_number()}],
                       channels := #{atom() => partisan_config:channel_opts()}}.
-type server_ref() :: pid() | atom() | {atom(), node()} | partisan_remote_ref:remote_ref().
-type forward_opts() :: #{channel => atom(), partition_key => non_neg_integer(), atom() => term()}
                      | [{atom(), term()}].
-type send_error() :: {error, not_connected | queue_full | not_started | bad_destination
                              | {unknown_channel, term()} | {unsupported_option, atom()}
                              | {bad_partition_key, term()} | {bad_node, term()}
                              | {bad_options, term()}
                              | {message_too_large, non_neg_integer(), non_neg_integer()}}.
-export_type([node_spec/0, server_ref/0, forward_opts/0]).

%% Binaries at least this large are encoded on a dirty scheduler (over ~1 ms of copying).
-define(DIRTY_BYTES, 512 * 1024).

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
%% the overlay). `ok' means the message is queued on a live connection, not that it arrived (see
%% the README's semantics). A message whose frame exceeds the receiver's `max_frame_size'
%% returns `{error, {message_too_large, Size, Max}}'.
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

%% @doc A new reference (Erlang's; it carries this node when the VM is alive).
-spec make_ref() -> reference().
make_ref() -> erlang:make_ref().

%% @doc Whether `X' is a pid or a remote reference of a process.
-spec is_pid(term()) -> boolean().
is_pid(X) when erlang:is_pid(X) -> true;
is_pid(X) -> partisan_remote_ref:is_type(X) andalso partisan_remote_ref:is_pid(X).

%% @doc Whether `X' is a reference or a remote reference of one.
-spec is_reference(term()) -> boolean().
is_reference(X) when erlang:is_reference(X) -> true;
is_reference(X) -> partisan_remote_ref:is_type(X) andalso partisan_remote_ref:is_reference(X).

%% @doc Whether a pid, reference or remote reference belongs to this node.
-spec is_local(term()) -> boolean().
is_local(X) when erlang:is_pid(X); erlang:is_reference(X) -> erlang:node(X) =:= erlang:node();
is_local(X) -> partisan_remote_ref:is_local(X, ?MODULE:node()).

%% @doc The pid registered as `Name' on this node.
-spec whereis(atom()) -> pid() | undefined.
whereis(Name) -> erlang:whereis(Name).

%% @doc Subscribes the caller to `{nodeup, Node}' and `{nodedown, Node}' messages.
-spec monitor_nodes(boolean()) -> ok.
monitor_nodes(Flag) -> monitor_nodes(Flag, []).

%% @doc `monitor_nodes/1' with `net_kernel:monitor_nodes/2' options (`nodedown_reason',
%% `{node_type, _}' give the `{nodeup, Node, Info}' form).
-spec monitor_nodes(boolean(), [term()]) -> ok.
monitor_nodes(Flag, Opts) when is_boolean(Flag), is_list(Opts) ->
    partisan_peer_service_events:monitor_nodes(erlang:self(), Flag, Opts).

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
    case unsupported(Opts) of
        [] -> send_remote_checked(Node, ServerRef, Msg, Opts);
        [Opt | _] -> {error, {unsupported_option, Opt}}
    end.

%% Options whose guarantees this release cannot give yet are refused rather than ignored: a
%% caller asking for `ack' must not believe its message is retransmitted.
unsupported(Opts) ->
    [K || K <- [ack, retransmission, causal_label],
          maps:get(K, Opts, false) =/= false, maps:get(K, Opts, undefined) =/= undefined].

send_remote_checked(Node, ServerRef, Msg, Opts) ->
    Channel = maps:get(channel, Opts, undefined),
    Key = maps:get(partition_key, Opts, undefined),
    case destination(ServerRef) of
        {ok, Dest} when map_get(transitive, Opts) =:= true ->
            case partisan_nif:is_connected(Node, Channel) of
                true -> partisan_nif:send(Node, Channel, Key, Dest, Msg);
                false -> send_transitive(Node, Dest, Msg)
            end;
        {ok, Dest} when erlang:is_binary(Msg), byte_size(Msg) >= ?DIRTY_BYTES ->
            partisan_nif:send_dirty(Node, Channel, Key, Dest, Msg);
        {ok, Dest} ->
            partisan_nif:send(Node, Channel, Key, Dest, Msg);
        error ->
            {error, bad_destination}
    end.

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
