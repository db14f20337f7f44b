%% @doc Loader and stubs of the Rust data plane NIF (`native/partisan_nif`).
%%
%% Every function here is replaced by the NIF when `priv/libpartisan_nif.so' loads. If it cannot
%% load, `partisan' fails to start with `{error, {nif_not_loaded, Path, Why}}' naming the path
%% tried, so a missing build step is obvious.
-module(partisan_nif).

-export([load/0]).
-export([check_config/1, config_keys/0, config/0, reload_tls/1]).
-export([start/1, stop/0, join/1, leave/1, members/0, connected/0, is_connected/2,
         is_fully_connected/1, send/5, send_dirty/5, send_acked/5, send_acked_dirty/5, send_transitive/3,
         send_acked_transitive/3, stats/0, views/0, broadcast_peers/0, member_specs/0,
         partition/2, partitions/0, set_members/1, send_control/2, broadcast/2,
         broadcast_merged/2, broadcast_grafted/4, await_reply/2, cancel_reply/1,
         fail_replies/2, reply_nodes/0, rewrite_pids/5, set_interposer/1, decoded/2,
         set_delivery_lane/2, deliver_pending/1]).

-nifs([check_config/1, config_keys/0, config/0, reload_tls/1, start/1, stop/0, join/1, leave/1, members/0, connected/0, is_connected/2,
       is_fully_connected/1, send/5, send_dirty/5, send_acked/5, send_acked_dirty/5, send_transitive/3,
       send_acked_transitive/3, stats/0, views/0, broadcast_peers/0, member_specs/0,
       partition/2, partitions/0, set_members/1, send_control/2, broadcast/2,
       broadcast_merged/2, broadcast_grafted/4, await_reply/2, cancel_reply/1,
       fail_replies/2, reply_nodes/0, rewrite_pids/5, set_interposer/1, decoded/2,
       set_delivery_lane/2, deliver_pending/1]).

%% A destination on the receiving node: a pid, a registered name, a pid of a remote reference, or
%% a caller waiting for an answer (`await_reply/2').
-type dest() :: pid() | atom() | binary() | {pid_id, non_neg_integer(), non_neg_integer()}
              | {reply, non_neg_integer()}.
-export_type([dest/0]).

%% @doc Loads the NIF once per VM; later calls are no-ops.
-spec load() -> ok | {error, {nif_not_loaded, file:filename(), term()}}.
load() ->
    case erlang:function_exported(?MODULE, start, 1) andalso is_loaded() of
        true -> ok;
        false -> do_load()
    end.

is_loaded() ->
    try stats() of _ -> true catch error:{nif_not_loaded, _} -> false end.

do_load() ->
    Path = filename:join(priv_dir(), "libpartisan_nif"),
    case erlang:load_nif(Path, 0) of
        ok -> ok;
        {error, {reload, _}} -> ok;
        {error, {upgrade, _}} -> ok;
        {error, Why} -> {error, {nif_not_loaded, Path ++ ".so", Why}}
    end.

%% The priv directory beside the ebin this module was loaded from (so a copy of the app in an
%% unrelated code path directory is never picked up), else the application's.
priv_dir() ->
    Beside = filename:join(filename:dirname(filename:dirname(code:which(?MODULE))), "priv"),
    case filelib:is_regular(filename:join(Beside, "libpartisan_nif.so")) of
        true -> Beside;
        false ->
            case code:priv_dir(partisan) of
                {error, bad_name} -> Beside;
                Dir -> Dir
            end
    end.

-define(NIF, erlang:nif_error({nif_not_loaded, ?MODULE})).


%% @doc Checks the data plane's configuration keys in `Config' (with the context
%% `partisan_config' decided: name, cookie, overlay, tag, schedulers_online) and returns their
%% effective values, defaults filled in.
-spec check_config(map()) -> {ok, map()} | {error, {invalid_config, atom(), binary()}}.
check_config(_Config) -> ?NIF.
%% @doc The configuration keys the data plane owns (checks and defaults).
-spec config_keys() -> [atom()].
config_keys() -> ?NIF.
%% @doc The effective values of the data plane's keys the running node started with.
-spec config() -> {ok, map()} | {error, not_started}.
config() -> ?NIF.
%% @doc Re-reads the TLS certificates and keys named by `tls_server_options' and
%% `tls_client_options' in `Config' (with `tls => true'): connections made from now on use them.
%% On an error the files in use stay in use.
-spec reload_tls(map()) -> ok | {error, not_started | {invalid_config, atom(), binary()}}.
reload_tls(_Config) -> ?NIF.
%% @doc Starts the data plane with a config map built by `partisan_config:nif_config/0'.
-spec start(map()) -> {ok, map()} | {error, term()}.
start(_Config) -> ?NIF.
%% @doc Flushes the send queues (for at most `stop_flush_timeout'), closes every connection
%% and stops the data plane threads; reports what could not be written in time.
-spec stop() -> {ok, #{undelivered_on_stop => non_neg_integer(), flushed => boolean(),
                       elapsed_ms => non_neg_integer()}}.
stop() -> ?NIF.
%% @doc Adds a node spec to the membership and connects to it.
-spec join(map()) -> ok | {error, term()}.
join(_Spec) -> ?NIF.
%% @doc Removes a node (this one included) from the cluster.
-spec leave(node()) -> ok | {error, term()}.
leave(_Node) -> ?NIF.
%% @doc Live members, this node included, sorted.
-spec members() -> [node()].
members() -> ?NIF.
%% @doc Nodes with at least one connection up, sorted.
-spec connected() -> [node()].
connected() -> ?NIF.
%% @doc Whether a connection of `Channel' (or any channel for `'$any'') to `Node' is up.
-spec is_connected(node(), atom()) -> boolean().
is_connected(_Node, _Channel) -> ?NIF.
%% @doc Whether every connection of every channel to `Node' is up.
-spec is_fully_connected(node()) -> boolean().
is_fully_connected(_Node) -> ?NIF.
%% @doc Encodes `Msg' and queues it for `Dest' on `Node'; never waits for the socket. `Key' is a
%% partition key, a pid (the connection that pid's own messages take) or `undefined' (the caller's).
%% On a VM that is not alive, pids of this VM in `Msg' leave as remote references of this
%% partisan node (`pid_encoding'); `{cannot_rewrite_pids, Why}' if that is impossible (a term
%% nested over a million levels deep).
-spec send(node(), atom(), non_neg_integer() | pid() | undefined, dest(), term()) ->
    ok | {error, not_connected | queue_full | unknown_channel | bad_destination | not_started
                 | {unknown_channel, atom()} | {cannot_rewrite_pids, binary()}}.
send(_Node, _Channel, _Key, _Dest, _Msg) -> ?NIF.
%% @doc `send/5' on a dirty CPU scheduler, for messages whose encoding may take over 1 ms.
-spec send_dirty(node(), atom(), non_neg_integer() | undefined, term(), term()) -> ok | {error, term()}.
send_dirty(_Node, _Channel, _Key, _Dest, _Msg) -> ?NIF.
%% @doc `send/5' with `ack': the message is numbered and kept until `Node' acknowledges it,
%% resent after a lost connection or `retransmit_interval' without progress, and delivered
%% exactly once while both nodes live. A node not connected yet is not an error: the message
%% waits, up to `max_unacked_bytes' per node (then `{error, queue_full}').
-spec send_acked(node(), atom(), non_neg_integer() | pid() | undefined, dest(), term()) ->
    ok | {error, queue_full | unknown_channel | bad_destination | not_started
                 | {unknown_channel, atom()} | {cannot_rewrite_pids, binary()}
                 | {message_too_large, non_neg_integer(), non_neg_integer()}}.
send_acked(_Node, _Channel, _Key, _Dest, _Msg) -> ?NIF.
%% @doc `send_acked/5' on a dirty CPU scheduler, for messages whose encoding may take over 1 ms.
-spec send_acked_dirty(node(), atom(), non_neg_integer() | undefined, term(), term()) -> ok | {error, term()}.
send_acked_dirty(_Node, _Channel, _Key, _Dest, _Msg) -> ?NIF.
%% @doc Sends `Msg' to `Dest' on `Node' through the overlay, relayed by neighbours when `Node'
%% is not one (on the default channel).
-spec send_transitive(node(), term(), term()) -> ok | {error, not_connected | queue_full | bad_destination | not_started}.
send_transitive(_Node, _Dest, _Msg) -> ?NIF.
%% @doc `send_transitive/3' with `ack': delivered exactly once and in order while both nodes live,
%% sent again until `Node' acknowledges it (end to end, whether or not `Node' is a neighbour).
%% No neighbour now is not an error: the message waits, up to `max_unacked_bytes' per node (then
%% `{error, queue_full}'). Given up, counted (`dropped_unacknowledged') and logged only when `Node'
%% acknowledges nothing for a minute.
-spec send_acked_transitive(node(), term(), term()) ->
    ok | {error, queue_full | bad_destination | not_started
                 | {message_too_large, non_neg_integer(), non_neg_integer()}}.
send_acked_transitive(_Node, _Dest, _Msg) -> ?NIF.
%% @doc The overlay's named views (HyParView: `active', `passive', `unreachable').
-spec views() -> #{atom() => [node()]}.
views() -> ?NIF.
%% @doc The specs of the members the overlay knows, this node's included, sorted by name (read
%% from the data plane's state as published at the last change of the member list); `[]' when
%% the data plane is not running. HyParView's specs have no channels (its protocol sends none).
-spec member_specs() -> [map()].
member_specs() -> ?NIF.
%% @doc Plumtree's `{EagerPeers, LazyPeers}' (sorted), read from the data plane's last published
%% state without a hop; `undefined' when broadcast is off or the data plane is not running.
-spec broadcast_peers() -> {[node()], [node()]} | undefined.
broadcast_peers() -> ?NIF.
%% @doc Cuts (`true') or restores (`false') every link to `Node'.
-spec partition(node(), boolean()) -> ok | {error, not_started | overloaded}.
partition(_Node, _Blocked) -> ?NIF.
%% @doc Nodes currently cut off by `partition/2'.
-spec partitions() -> [node()].
partitions() -> ?NIF.
%% @doc Replaces the member list (node specs), for an Erlang membership strategy.
-spec set_members([map()]) -> ok | {error, term()}.
set_members(_Specs) -> ?NIF.
%% @doc Sends a binary on `Node''s membership link (an Erlang membership strategy's message).
-spec send_control(node(), binary()) -> ok | {error, not_connected | queue_full | not_started}.
send_control(_Node, _Body) -> ?NIF.
%% @doc Broadcasts an encoded message id and payload with Plumtree.
-spec broadcast(binary(), binary()) -> ok | {error, not_started | overloaded}.
broadcast(_MsgId, _Payload) -> ?NIF.
%% @doc The handler's `merge/2' answer for a delivered broadcast.
-spec broadcast_merged(binary(), boolean()) -> ok | {error, not_started}.
broadcast_merged(_MsgId, _IsNew) -> ?NIF.
%% @doc The handler's `graft/1' answer: the encoded payload, or `undefined'.
-spec broadcast_grafted(node(), binary(), non_neg_integer(), binary() | undefined) -> ok | {error, not_started}.
broadcast_grafted(_Node, _MsgId, _Round, _Payload) -> ?NIF.
%% @doc Registers the caller as waiting for `{Tag, Reply}' from `Node'; the answer must be sent
%% to `{reply, Id}'. Answers after `cancel_reply/1' or from another node are dropped.
-spec await_reply(node(), term()) -> {ok, non_neg_integer()} | {error, not_started}.
await_reply(_Node, _Tag) -> ?NIF.
%% @doc Stops waiting: `true' if the answer had not arrived, `false' if it is in the mailbox.
-spec cancel_reply(non_neg_integer()) -> boolean().
cancel_reply(_Id) -> ?NIF.
%% @doc Ends every wait on `Node' with `{'DOWN', Tag, process, Node, Reason}'; returns how many.
-spec fail_replies(node(), atom()) -> non_neg_integer().
fail_replies(_Node, _Reason) -> ?NIF.
%% @doc Nodes that callers of this VM wait on.
-spec reply_nodes() -> [node()].
reply_nodes() -> ?NIF.
%% @doc Rewrites the pids of node `MatchNode' in the encoded term `Etf' into remote references
%% of `RefNode' in `Format' (`uri' padded when `Padded'), as `send/5' does on a VM that is not
%% alive: `{ok, NewEtf}', `unchanged' when there is no such pid, `{error, Why}' for a malformed
%% term. For tests and diagnostics (runs on a dirty scheduler).
-spec rewrite_pids(binary(), node(), node(), improper_list | tuple | uri, boolean()) ->
    {ok, binary()} | unchanged | {error, binary()}.
rewrite_pids(_Etf, _MatchNode, _RefNode, _Format, _Padded) -> ?NIF.
%% @doc Data plane counters.
-spec stats() -> #{atom() => non_neg_integer()}.
stats() -> ?NIF.

%% @doc Routes received messages through the interposition process `Pid' (as
%% `{'$partisan_interpose', FromNode, DestPid, Msg}'), or straight to their destinations again
%% (`undefined'). Set by `partisan_interposition' only.
-spec set_interposer(pid() | undefined) -> ok.
set_interposer(_Pid) -> ?NIF.

%% @doc The decoder decoded the payload of `Token' and sent it on (`delivered'), could not decode
%% it (`undecodable') or found its destination dead (`noproc'): the reader waiting for it goes
%% on. `false' when the reader no longer waits. Called by `partisan_decoder' only.
-spec decoded(non_neg_integer(), delivered | undecodable | noproc) -> boolean().
decoded(_Token, _Outcome) -> ?NIF.

%% @doc Registers the calling process as the process of delivery lane `Index' of `Count'
%% (`partisan_delivery'); `true' when messages already wait in it.
-spec set_delivery_lane(non_neg_integer(), pos_integer()) -> boolean().
set_delivery_lane(_Index, _Count) -> ?NIF.

%% @doc Delivers a batch of the messages waiting in delivery lane `Index' from the calling
%% process's scheduler; `true' when more wait. Called by `partisan_delivery' only.
-spec deliver_pending(non_neg_integer()) -> boolean().
deliver_pending(_Index) -> ?NIF.
