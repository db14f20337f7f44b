%% @doc The callbacks of a module whose data `partisan_plumtree_broadcast' disseminates.
%%
%% The Rust core runs Plumtree (eager push on tree links, lazy announcements on the others,
%% grafts, prunes, anti-entropy digests); the handler decides what a message means: whether a
%% received payload is new (`merge/2'), and what to answer when a neighbour asks for a message
%% the core no longer caches (`graft/1').
-module(partisan_plumtree_broadcast_handler).

%% The message id and payload of a broadcast.
-callback broadcast_data(Broadcast :: term()) -> {MsgId :: term(), Payload :: term()}.

%% A received message: apply it and return `true' if it was new (it is then forwarded on), or
%% `false' if this node already had it or something newer (the link it came on is pruned).
-callback merge(MsgId :: term(), Payload :: term()) -> boolean().

%% Whether this node already has `MsgId' or something newer.
-callback is_stale(MsgId :: term()) -> boolean().

%% A neighbour asks for `MsgId': its payload, or `stale' if it was superseded.
-callback graft(MsgId :: term()) -> stale | {ok, Payload :: term()} | {error, term()}.

%% Application-level anti-entropy with `Node', every `exchange_tick_period'.
-callback exchange(Node :: node()) -> {ok, pid()} | ignore | {error, term()}.
