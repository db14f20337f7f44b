%% @doc Membership API (Partisan v5's `partisan_peer_service').
%%
%% Joining any one member of a cluster is enough: membership gossip tells every member about
%% the newcomer, and each one connects to it on every channel.
%%
%% Bad arguments return `{error, Reason}' (`{bad_node_spec, Why}', `{bad_node, X}',
%% `{bad_callback, F}', `{bad_options, O}'); nothing here raises for them.
-module(partisan_peer_service).

-export([join/1, sync_join/1, sync_join/2, leave/0, leave/1, members/0, member/1,
         connections/0, manager/0, on_up/2, on_up/3, on_down/2, on_down/3, stop/0, stop/1,
         get_local_state/0, inject_partition/2, resolve_partition/1, partitions/0,
         members_for_orchestration/0, update_members/1, reserve/1, decode/1, add_sup_callback/1,
         broadcast_members/0, broadcast_members/1, exchanges/0, exchanges/1,
         cancel_exchanges/1]).

-define(SYNC_JOIN_TIMEOUT, 10000).

%% @doc Joins the node a spec describes (or several). Returns at once; connections follow.
-spec join(partisan:node_spec() | [partisan:node_spec()]) -> ok | {error, term()}.
join(Specs) when is_list(Specs) ->
    lists:foldl(fun(S, ok) -> join(S); (_, Err) -> Err end, ok, Specs);
join(Spec) ->
    case partisan_node_spec:validate(Spec) of
        {ok, #{name := Name} = Valid} ->
            case {Name =:= partisan:node(), erlang_strategy()} of
                {true, _} -> {error, self_join};
                {false, true} -> partisan_peer_service_manager:strategy_join(Valid);
                {false, false} -> partisan_nif:join(Valid)
            end;
        {error, _} = Error ->
            Error
    end.

%% @doc Joins and waits until every connection to the node is up (10 s at most).
-spec sync_join(partisan:node_spec() | [partisan:node_spec()]) -> ok | {error, term()}.
sync_join(Spec) -> sync_join(Spec, ?SYNC_JOIN_TIMEOUT).

%% @doc `sync_join/1' with a timeout in milliseconds.
-spec sync_join(partisan:node_spec() | [partisan:node_spec()], timeout()) -> ok | {error, term()}.
sync_join(Specs, Timeout) ->
    case join(Specs) of
        ok ->
            Names = [N || #{name := N} <- lists:flatten([Specs])],
            Deadline = erlang:monotonic_time(millisecond) + Timeout,
            wait_connected(Names, Deadline);
        Error ->
            Error
    end.

wait_connected(Names, Deadline) ->
    case lists:all(fun partisan_nif:is_fully_connected/1, Names) of
        true -> ok;
        false ->
            case erlang:monotonic_time(millisecond) >= Deadline of
                true -> {error, timeout};
                false -> receive after 5 -> wait_connected(Names, Deadline) end
            end
    end.

%% @doc This node leaves the cluster: the others are told, then its connections close.
-spec leave() -> ok | {error, term()}.
leave() -> leave(partisan:node_spec()).

%% @doc Removes a node (name or spec) from the cluster. With an Erlang membership strategy,
%% pass the spec: the strategy's `leave/2' receives it.
-spec leave(node() | partisan:node_spec()) -> ok | {error, term()}.
leave(#{name := Name} = Spec) when is_atom(Name) ->
    case erlang_strategy() of
        true -> partisan_peer_service_manager:strategy_leave(Spec);
        false -> partisan_nif:leave(Name)
    end;
leave(Node) when is_atom(Node) -> partisan_nif:leave(Node);
leave(Other) -> {error, {bad_node, Other}}.

%% Whether an Erlang membership strategy (not the native full mesh) decides membership.
erlang_strategy() ->
    partisan_config:get(membership_strategy, partisan_full_membership_strategy) =/=
        partisan_full_membership_strategy.

%% @doc The members of the cluster, this node included.
-spec members() -> {ok, [node()]}.
members() -> {ok, partisan_nif:members()}.

%% @doc Whether `Node' is a member.
-spec member(node() | partisan:node_spec()) -> boolean().
member(#{name := Name}) -> member(Name);
member(Node) when is_atom(Node) -> lists:member(Node, partisan_nif:members());
member(Node) -> erlang:error(badarg, [Node]).

%% @doc The connected peers.
-spec connections() -> {ok, [node()]}.
connections() -> {ok, partisan_nif:connected()}.

%% @doc The peer service manager module in use.
-spec manager() -> module().
manager() -> partisan_config:get(peer_service_manager, partisan_pluggable_peer_service_manager).

%% @doc Runs `Fun' when `Node' (or `any' node) comes up.
-spec on_up(node() | any, function()) -> ok | {error, term()}.
on_up(Node, Fun) -> on_up(Node, Fun, #{}).

%% @doc `on_up/2' with options: `#{channel => C}' fires when the first connection of channel C
%% to the node is up, instead of the node's first connection.
-spec on_up(node() | any, function(), map() | list()) -> ok | {error, term()}.
on_up(Node, Fun, Opts) -> add(up, Node, Fun, Opts).

%% @doc Runs `Fun' when `Node' (or `any' node) goes down (its last connection closed).
-spec on_down(node() | any, function()) -> ok | {error, term()}.
on_down(Node, Fun) -> on_down(Node, Fun, #{}).

%% @doc `on_down/2' with options (`#{channel => C}').
-spec on_down(node() | any, function(), map() | list()) -> ok | {error, term()}.
on_down(Node, Fun, Opts) -> add(down, Node, Fun, Opts).

add(Which, #{name := Node}, Fun, Opts) -> add(Which, Node, Fun, Opts);
add(_, Node, _, _) when not is_atom(Node) -> {error, {bad_node, Node}};
add(_, _, Fun, _) when not (is_function(Fun, 0) orelse is_function(Fun, 1)
                            orelse is_function(Fun, 2)) ->
    {error, {bad_callback, Fun}};
add(Which, Node, Fun, Opts) when is_list(Opts) ->
    try maps:from_list(Opts) of
        Map -> add(Which, Node, Fun, Map)
    catch
        error:_ -> {error, {bad_options, Opts}}
    end;
add(Which, Node, Fun, #{channel := C} = Opts) when is_atom(C) ->
    partisan_peer_service_events:add_callback(Which, Node, maps:get(channel, Opts, any), Fun);
add(Which, Node, Fun, Opts) when is_map(Opts), not is_map_key(channel, Opts) ->
    partisan_peer_service_events:add_callback(Which, Node, any, Fun);
add(_, _, _, Opts) ->
    {error, {bad_options, Opts}}.

%% @doc The overlay's views of this node: `#{members, connected}' for the mesh managers,
%% `#{active, passive, unreachable}' for HyParView.
-spec get_local_state() -> {ok, #{atom() => [node()]}}.
get_local_state() -> {ok, partisan_nif:views()}.

%% @doc Fault injection: cuts every link to the node (name or spec) and refuses new ones, as a
%% network partition would, until `resolve_partition/1'. `TTL' is accepted for Partisan's
%% signature and ignored. The reference is the node's name. Cut both directions by calling it on
%% both sides.
-spec inject_partition(node() | partisan:node_spec(), term()) -> {ok, node()} | {error, term()}.
inject_partition(#{name := Node}, TTL) -> inject_partition(Node, TTL);
inject_partition(Node, _TTL) when is_atom(Node) ->
    case partisan_nif:partition(Node, true) of
        ok -> {ok, Node};
        Error -> Error
    end;
inject_partition(Other, _TTL) -> {error, {bad_node, Other}}.

%% @doc Ends a partition injected with `inject_partition/2'; links are made again by the overlay.
-spec resolve_partition(node()) -> ok | {error, term()}.
resolve_partition(Node) when is_atom(Node) -> partisan_nif:partition(Node, false);
resolve_partition(Other) -> {error, {bad_node, Other}}.

%% @doc The partitions injected on this node, as `{Reference, Node}' pairs.
-spec partitions() -> {ok, [{node(), node()}]}.
partitions() -> {ok, [{N, N} || N <- partisan_nif:partitions()]}.

%% @doc The members' node specs, this node's included: `{ok, Specs}' (v5's
%% `members_for_orchestration/0', what orchestration strategies compare with their own list). Read
%% from the data plane without a hop; on HyParView the members are this node and its active view,
%% and their specs carry no channels (HyParView's protocol does not send them).
-spec members_for_orchestration() -> {ok, [partisan:node_spec()]}.
members_for_orchestration() -> {ok, partisan_nif:member_specs()}.

%% @doc Makes the membership the given list (node specs, or names of nodes already known), as an
%% external membership service would (v5's `update_members/1'): joins every listed spec whose
%% node is not known yet, and removes (`leave/1') every known node that is not listed, never this
%% node. Known means in one of this node's views (`get_local_state/0': members for the mesh
%% managers; active, passive and unreachable for HyParView). A listed name without a spec cannot
%% be joined and is only kept. Returns the first error of a join or a leave, if any.
-spec update_members([node() | partisan:node_spec()]) -> ok | {error, term()}.
update_members(Members) when is_list(Members) ->
    case listed(Members, [], []) of
        {ok, Names, Specs} ->
            Me = partisan:node(),
            {ok, Views} = get_local_state(),
            Known = lists:usort(lists:append(maps:values(Views))) -- [Me],
            Joins = [S || S = #{name := N} <- Specs, N =/= Me, not lists:member(N, Known)],
            Leaves = [N || N <- Known, not lists:member(N, Names)],
            first_error([join(S) || S <- Joins] ++ [leave(N) || N <- Leaves]);
        {error, _} = Error ->
            Error
    end;
update_members(Other) ->
    {error, {bad_members, Other}}.

listed([], Names, Specs) -> {ok, Names, lists:reverse(Specs)};
listed([N | Rest], Names, Specs) when is_atom(N) -> listed(Rest, [N | Names], Specs);
listed([S | Rest], Names, Specs) ->
    case partisan_node_spec:validate(S) of
        {ok, #{name := N} = Valid} -> listed(Rest, [N | Names], [Valid | Specs]);
        {error, _} = Error -> Error
    end.

first_error(Results) ->
    case [E || {error, _} = E <- Results] of
        [] -> ok;
        [E | _] -> E
    end.

%% @doc Reserves an active-view slot for nodes of `Tag' (v5's HyParView reservations). The data
%% plane keeps no reserved slots (the `reservations' key is not implemented), so no tag has a
%% slot: always `{error, no_available_slots}', v5's answer where no reservation is configured.
-spec reserve(atom()) -> {error, no_available_slots}.
reserve(_Tag) -> {error, no_available_slots}.

%% @doc The member names in a membership state: the list of node specs given to
%% `add_sup_callback/1' callbacks, `get_local_state/0''s result, or a list of specs or names.
%% Raises `badarg' for anything else.
-spec decode(term()) -> [node()].
decode(State) -> [N || #{name := N} <- partisan_peer_service_manager:decode(State)].

%% @doc Calls `Fun(State)' on every change of the membership, in order, until the calling process
%% exits (v5's supervised callback). `State' is the list of the members' node specs
%% (`members_for_orchestration/0'); `decode/1' turns it into names. The callbacks run in a process
%% of their own (one per callback), so a slow one delays no other. If `Fun' raises, it is removed
%% and the caller receives `{gen_event_EXIT, {partisan_peer_service_events, Ref}, {'EXIT', Why}}',
%% as from v5's supervised handler.
-spec add_sup_callback(fun((term()) -> any())) -> ok | {error, {bad_callback, term()}}.
add_sup_callback(Fun) when is_function(Fun, 1) -> partisan_peer_service_events:add_sup_callback(Fun);
add_sup_callback(Fun) -> {error, {bad_callback, Fun}}.

%% @doc The members as Plumtree sees them (`partisan_plumtree_broadcast:broadcast_members/0').
-spec broadcast_members() -> ordsets:ordset(node()).
broadcast_members() -> partisan_plumtree_broadcast:broadcast_members().

%% @doc `broadcast_members/0' (`Timeout' is accepted for v5's signature).
-spec broadcast_members(infinity | pos_integer()) -> ordsets:ordset(node()).
broadcast_members(Timeout) -> partisan_plumtree_broadcast:broadcast_members(Timeout).

%% @doc The running exchanges started by this node's broadcast handlers
%% (`partisan_plumtree_broadcast:exchanges/0').
-spec exchanges() -> [partisan_plumtree_broadcast:exchange()].
exchanges() -> partisan_plumtree_broadcast:exchanges().

%% @doc The running exchanges started on `Node' (`partisan_plumtree_broadcast:exchanges/1').
-spec exchanges(node()) -> [partisan_plumtree_broadcast:exchange()].
exchanges(Node) -> partisan_plumtree_broadcast:exchanges(Node).

%% @doc Cancels exchanges started by this node (`partisan_plumtree_broadcast:cancel_exchanges/1').
-spec cancel_exchanges(partisan_plumtree_broadcast:selector()) -> [partisan_plumtree_broadcast:exchange()].
cancel_exchanges(Selector) -> partisan_plumtree_broadcast:cancel_exchanges(Selector).

%% @doc Stops the `partisan' application.
-spec stop() -> ok | {error, term()}.
stop() -> application:stop(partisan).

%% @doc Stops the `partisan' application (the reason is logged).
-spec stop(term()) -> ok | {error, term()}.
stop(Reason) ->
    logger:notice("partisan stopping: ~p", [Reason]),
    stop().
