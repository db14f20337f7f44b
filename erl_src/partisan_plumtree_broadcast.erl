%% @doc Plumtree broadcast (Partisan's `partisan_plumtree_broadcast'), with dissemination in Rust.
%%
%% `broadcast/2' asks the handler module for `{MsgId, Payload}' and hands both to the data
%% plane, which pushes them down the broadcast tree over the overlay's neighbours. This process
%% answers the core's questions with the handler's callbacks: `merge/2' for every message not
%% seen before (only new messages travel on), `graft/1' when a neighbour needs a message the core
%% no longer caches, and `exchange/1' on every anti-entropy tick. Ids and payloads travel as
%% `term_to_binary({Mod, MsgId})' and `term_to_binary(Payload)'.
%%
%% Enable with `{broadcast, true}'; `lazy_tick_period' and `exchange_tick_period' tune the
%% protocol.
%%
%% The tree: one spanning tree serves every origin (as in the paper; v5 keeps one per root), so
%% the eager and lazy peers `get_peers/1,2', `get_eager_peers/1' and `get_lazy_peers/1' return are
%% the same whatever the root. They are read from the data plane's state without a hop; the
%% `debug_*' functions ask another node's broadcast process over Partisan.
%%
%% Exchanges: every `exchange_tick_period' the data plane picks a neighbour and this process
%% calls each handler's `exchange/1' with it; each `{ok, Pid}' answer is an exchange, watched
%% until `Pid' ends (`exchanges/0,1,2', `cancel_exchanges/1').
-module(partisan_plumtree_broadcast).
-behaviour(gen_server).

-export([start_link/0, start_link/5, broadcast/2, broadcast_channel/1, broadcast_members/0,
         broadcast_members/1, update/1, exchanges/0, exchanges/1, exchanges/2,
         cancel_exchanges/1]).
-export([get_peers/1, get_peers/2, get_eager_peers/1, get_lazy_peers/1, debug_get_peers/2,
         debug_get_peers/3, debug_get_peers/4, debug_get_tree/2, debug_get_tree/3,
         debug_get_tree/4]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-include_lib("kernel/include/logger.hrl").

-type nodeset() :: ordsets:ordset(node()).
%% An exchange a handler started: `{Mod, Peer, MonitorRef, Pid}' (v5's).
-type exchange() :: {module(), node(), reference(), pid()}.
-type selector() :: all | {peer, node()} | {mod, module()} | reference() | pid().
-type info_opt() :: node_spec | metadata | distance.
-export_type([nodeset/0, exchange/0, selector/0, info_opt/0]).

-define(REMOTE_TIMEOUT, 5000).

%% @doc Starts the registered broadcast process.
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Starts the registered broadcast process with `Mods' as the handler modules whose
%% `exchange/1' it runs (v5's `start_link/5'; `start_link/0' takes `broadcast_mods'). The data
%% plane runs the tree: it starts, as v5's `start_link/0' does, with every neighbour eager and
%% none lazy, and follows the overlay's neighbours, so `Members', `Eagers' and `Lazys' are not
%% used (they must be lists); `lazy_tick_period' and `exchange_tick_period' are the data plane's
%% (application env, read at start): values in `Opts' (a map or proplist) that differ from them
%% are logged and not used.
-spec start_link([node()], [node()], [node()], [module()], map() | [{atom(), term()}]) ->
    {ok, pid()} | {error, term()}.
start_link(Members, Eagers, Lazys, Mods, Opts) when is_list(Opts) ->
    start_link(Members, Eagers, Lazys, Mods, maps:from_list(Opts));
start_link(Members, Eagers, Lazys, Mods, Opts)
  when is_list(Members), is_list(Eagers), is_list(Lazys), is_list(Mods), is_map(Opts) ->
    Ignored = [{K, V} || {K, V} <- maps:to_list(maps:with([lazy_tick_period, exchange_tick_period], Opts)),
                         V =/= partisan_config:get(K, V)],
    Ignored =:= [] orelse
        ?LOG_WARNING("partisan_plumtree_broadcast: ~p differ from the data plane's periods, which "
                     "are set in the application env before start: not used", [Ignored]),
    gen_server:start_link({local, ?MODULE}, ?MODULE, [Mods], []).

%% @doc Broadcasts `Broadcast' to every node through the tree; `Mod' is its handler module. The
%% caller has applied it locally already (as in Partisan). `{error, overloaded}' when the data
%% plane's request queue is full (65,536 requests waiting).
-spec broadcast(term(), module()) -> ok | {error, broadcast_disabled | not_started | overloaded}.
broadcast(Broadcast, Mod) ->
    case partisan_config:get(broadcast, false) of
        true ->
            {MsgId, Payload} = Mod:broadcast_data(Broadcast),
            partisan_nif:broadcast(term_to_binary({Mod, MsgId}), term_to_binary(Payload));
        false ->
            {error, broadcast_disabled}
    end.

%% @doc The channel v5 broadcasts `Mod''s messages on: the one its optional `broadcast_channel/0'
%% callback names, else the default channel. Here Plumtree's frames travel on the membership
%% channel's links whatever it answers (the tree is shared by all handlers).
-spec broadcast_channel(module()) -> atom().
broadcast_channel(Mod) ->
    _ = code:ensure_loaded(Mod),
    case erlang:function_exported(Mod, broadcast_channel, 0) of
        true -> Mod:broadcast_channel();
        false -> partisan:default_channel()
    end.

%% @doc The members as the broadcast sees them, this node included (sorted); read from the data
%% plane without a hop (on HyParView, this node and its active view).
-spec broadcast_members() -> nodeset().
broadcast_members() -> broadcast_members(infinity).

%% @doc `broadcast_members/0'; `Timeout' (v5's wait for its server) is checked and not needed.
-spec broadcast_members(infinity | pos_integer()) -> nodeset().
broadcast_members(Timeout) when Timeout =:= infinity; is_integer(Timeout), Timeout > 0 ->
    partisan_nif:members();
broadcast_members(Timeout) ->
    erlang:error(badarg, [Timeout]).

%% @doc v5's membership update (a `partisan_peer_service:add_sup_callback/1' callback). The data
%% plane's Plumtree follows the overlay's neighbour changes itself, so there is nothing to tell
%% it: the state is decoded (a bad one raises `badarg', as in v5) and `ok' returned.
-spec update(term()) -> ok.
update(State) ->
    _ = partisan_peer_service:decode(State),
    ok.

%% @doc The exchanges this node's handlers started that are still running.
-spec exchanges() -> [exchange()].
exchanges() -> gen_server:call(?MODULE, exchanges, infinity).

%% @doc The exchanges running on `Node' (asked over Partisan when it is another node).
-spec exchanges(node()) -> [exchange()].
exchanges(Node) -> exchanges(Node, infinity).

%% @doc `exchanges/1' within `Timeout' ms (exits like `gen_server:call/3' otherwise).
-spec exchanges(node(), timeout()) -> [exchange()].
exchanges(Node, Timeout) -> call(Node, exchanges, Timeout).

%% @doc Cancels (kills, reason `cancel_exchange') the exchanges started by this node that
%% `Selector' picks (`all', `{peer, Node}', `{mod, Mod}', a monitor reference or a pid) and
%% returns them.
-spec cancel_exchanges(selector()) -> [exchange()].
cancel_exchanges(Selector) -> gen_server:call(?MODULE, {cancel_exchanges, Selector}, infinity).

%% @doc This node's eager and lazy peers in the tree of `Root' (one tree serves every root).
%% Both are empty when broadcast is off.
-spec get_peers(node()) -> {nodeset(), nodeset()}.
get_peers(_Root) ->
    case partisan_nif:broadcast_peers() of
        {Eager, Lazy} -> {Eager, Lazy};
        undefined -> {[], []}
    end.

%% @doc `get_peers/1' and information about `Root': a map with `node_spec' (when `Opts' asks for
%% it and the data plane knows `Root''s spec) and `metadata' (`#{}': node metadata is not
%% implemented). `distance' is not measured: never in the map.
-spec get_peers(node(), [info_opt()]) -> {nodeset(), nodeset(), map()}.
get_peers(Root, Opts) when is_list(Opts) ->
    {Eager, Lazy} = get_peers(Root),
    {Eager, Lazy, node_info(Root, Opts)}.

%% @doc This node's eager (tree) peers for `Root'.
-spec get_eager_peers(node()) -> nodeset().
get_eager_peers(Root) -> element(1, get_peers(Root)).

%% @doc This node's lazy peers for `Root'.
-spec get_lazy_peers(node()) -> nodeset().
get_lazy_peers(Root) -> element(2, get_peers(Root)).

%% @doc `get_peers(Root)' of `Node' (no timeout).
-spec debug_get_peers(node(), node()) -> {nodeset(), nodeset()}.
debug_get_peers(Node, Root) -> debug_get_peers(Node, Root, infinity).

%% @doc `get_peers(Root)' of `Node', asked over Partisan within `Timeout' (exits like
%% `gen_server:call/3' when it does not answer).
-spec debug_get_peers(node(), node(), timeout()) -> {nodeset(), nodeset()}.
debug_get_peers(Node, Root, Timeout) -> call(Node, {get_peers, Root}, Timeout).

%% @doc `get_peers(Root, Opts)' of `Node' within `Timeout'.
-spec debug_get_peers(node(), node(), [info_opt()], timeout()) -> {nodeset(), nodeset(), map()}.
debug_get_peers(Node, Root, Opts, Timeout) -> call(Node, {get_peers, Root, Opts}, Timeout).

%% @doc The peers of every node of `Nodes' in the tree of `Root': `{Node, {Eager, Lazy}}', or
%% `{Node, down}' for a node that did not answer.
-spec debug_get_tree(node(), [node()]) -> [{node(), {nodeset(), nodeset()} | down}].
debug_get_tree(Root, Nodes) -> debug_get_tree(Root, Nodes, infinity).

%% @doc `debug_get_tree/2' with a timeout per node.
-spec debug_get_tree(node(), [node()], timeout()) -> [{node(), {nodeset(), nodeset()} | down}].
debug_get_tree(Root, Nodes, Timeout) ->
    [{N, try debug_get_peers(N, Root, Timeout) catch _:_ -> down end} || N <- Nodes].

%% @doc `debug_get_tree/3' with `get_peers/2''s information.
-spec debug_get_tree(node(), [node()], [info_opt()], timeout()) ->
    [{node(), {nodeset(), nodeset(), map()} | down}].
debug_get_tree(Root, Nodes, Opts, Timeout) ->
    [{N, try debug_get_peers(N, Root, Opts, Timeout) catch _:_ -> down end} || N <- Nodes].

call(Node, Request, Timeout) ->
    case Node =:= partisan:node() of
        true -> gen_server:call(?MODULE, Request, Timeout);
        false -> partisan_gen_server:call({?MODULE, Node}, Request, Timeout)
    end.

node_info(Root, Opts) ->
    Specs = [S || S = #{name := N} <- partisan_nif:member_specs(), N =:= Root],
    maps:from_list([{node_spec, S} || lists:member(node_spec, Opts), S <- Specs]
                   ++ [{metadata, #{}} || lists:member(metadata, Opts)]).

%% @private
-spec init([] | [[module()]]) -> {ok, map()}.
init([]) -> init([partisan_config:get(broadcast_mods, [])]);
init([Mods]) -> {ok, #{mods => lists:usort(Mods), exchanges => []}}.

%% @private
-spec handle_call(term(), gen_server:from(), map()) -> {reply, term(), map()}.
handle_call(exchanges, _From, S = #{exchanges := Exchanges}) ->
    {reply, Exchanges, S};
handle_call({cancel_exchanges, Selector}, _From, S = #{exchanges := Exchanges}) ->
    Cancelled = [E || E <- Exchanges, selected(Selector, E)],
    [exit(Pid, cancel_exchange) || {_, _, _, Pid} <- Cancelled],
    {reply, Cancelled, S};
handle_call({get_peers, Root}, _From, S) ->
    {reply, get_peers(Root), S};
handle_call({get_peers, Root, Opts}, _From, S) when is_list(Opts) ->
    {reply, get_peers(Root, Opts), S};
handle_call(_, _From, S) -> {reply, {error, unknown_call}, S}.

selected(all, _) -> true;
selected({peer, Node}, {_, Node, _, _}) -> true;
selected({mod, Mod}, {Mod, _, _, _}) -> true;
selected(Ref, {_, _, Ref, _}) when is_reference(Ref) -> true;
selected(Pid, {_, _, _, Pid}) when is_pid(Pid) -> true;
selected(_, _) -> false.

%% @private
-spec handle_cast(term(), map()) -> {noreply, map()}.
handle_cast(_, S) -> {noreply, S}.

%% @private
-spec handle_info(term(), map()) -> {noreply, map()}.
handle_info({partisan_event, bcast_deliver, IdBin, PayloadBin, From}, S) ->
    {Handler, IsNew} =
        try
            {Mod, MsgId} = binary_to_term(IdBin),
            {Mod, Mod:merge(MsgId, binary_to_term(PayloadBin)) =:= true}
        catch
            Class:Reason ->
                ?LOG_WARNING("partisan broadcast from ~p not merged: ~p:~p", [From, Class, Reason]),
                {undefined, false}
        end,
    ok = partisan_nif:broadcast_merged(IdBin, IsNew),
    partisan_telemetry:execute([partisan, broadcast, delivered],
                               #{count => 1, size => byte_size(PayloadBin)},
                               #{from => From, handler => Handler, new => IsNew}),
    {noreply, S};
handle_info({partisan_event, bcast_graft, Node, IdBin, Round}, S) ->
    Payload = try binary_to_term(IdBin) of
                  {Mod, MsgId} ->
                      case Mod:graft(MsgId) of
                          {ok, P} -> term_to_binary(P);
                          _ -> undefined
                      end
              catch
                  _:_ -> undefined
              end,
    ok = partisan_nif:broadcast_grafted(Node, IdBin, Round, Payload),
    {noreply, S};
handle_info({partisan_event, bcast_exchange, Node}, S = #{mods := Mods, exchanges := Exchanges}) ->
    Started = [{Mod, Node, erlang:monitor(process, Pid), Pid}
               || Mod <- Mods, {ok, Pid} <- [catch Mod:exchange(Node)], is_pid(Pid)],
    {noreply, S#{exchanges := Started ++ Exchanges}};
handle_info({'DOWN', Ref, process, _, _}, S = #{exchanges := Exchanges}) ->
    {noreply, S#{exchanges := lists:keydelete(Ref, 3, Exchanges)}};
handle_info(_, S) ->
    {noreply, S}.
