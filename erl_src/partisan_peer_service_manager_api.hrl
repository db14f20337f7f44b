%% Partisan v5's peer service manager API, on every manager module, so that code written for v5
%%
%%     Manager = partisan_peer_service:manager(),
%%     ok = Manager:forward_message(Node, Dest, Msg, #{}),
%%     {ok, Members} = Manager:members().
%%
%% runs unchanged whichever of the four managers is configured. Every function delegates, in one
%% line, to `partisan', `partisan_peer_service' or `partisan_peer_service_manager', which
%% document them; no manager process sits in the way (the data plane does the work). Included by
%% `partisan_pluggable_peer_service_manager', `partisan_hyparview_peer_service_manager',
%% `partisan_client_server_peer_service_manager' and `partisan_static_peer_service_manager'.
-export([start_link/0, member/1, members/0, members_for_orchestration/0, join/1, sync_join/1,
         leave/0, leave/1, forward_message/2, forward_message/3, forward_message/4,
         cast_message/2, cast_message/3, cast_message/4, send_message/2, receive_message/3,
         on_up/2, on_up/3, on_down/2, on_down/3, inject_partition/2, resolve_partition/1,
         partitions/0, reserve/1, decode/1, get_local_state/0, update_members/1,
         supports_capability/1]).

-include("partisan_interposition_api.hrl").

%% @doc Starts the data plane with this overlay (`partisan_peer_service_manager').
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() -> partisan_peer_service_manager:start_link().

%% @doc Whether `Node' is a member (`partisan_peer_service:member/1').
-spec member(node() | partisan:node_spec()) -> boolean().
member(Node) -> partisan_peer_service:member(Node).

%% @doc The members, this node included (`partisan_peer_service:members/0').
-spec members() -> {ok, [node()]}.
members() -> partisan_peer_service:members().

%% @doc The members' node specs (`partisan_peer_service:members_for_orchestration/0').
-spec members_for_orchestration() -> {ok, [partisan:node_spec()]}.
members_for_orchestration() -> partisan_peer_service:members_for_orchestration().

%% @doc Joins the node a spec describes (`partisan_peer_service:join/1').
-spec join(partisan:node_spec() | [partisan:node_spec()]) -> ok | {error, term()}.
join(Spec) -> partisan_peer_service:join(Spec).

%% @doc Joins and waits for the connections (`partisan_peer_service:sync_join/1').
-spec sync_join(partisan:node_spec() | [partisan:node_spec()]) -> ok | {error, term()}.
sync_join(Spec) -> partisan_peer_service:sync_join(Spec).

%% @doc This node leaves the cluster (`partisan_peer_service:leave/0').
-spec leave() -> ok | {error, term()}.
leave() -> partisan_peer_service:leave().

%% @doc Removes a node (spec or name) from the cluster (`partisan_peer_service:leave/1').
-spec leave(node() | partisan:node_spec()) -> ok | {error, term()}.
leave(Node) -> partisan_peer_service:leave(Node).

%% @doc `partisan:forward_message/2'.
-spec forward_message(partisan:server_ref(), term()) -> ok | {error, term()}.
forward_message(ServerRef, Msg) -> partisan:forward_message(ServerRef, Msg).

%% @doc `partisan:forward_message/3' (`ServerRef', `Msg', `Opts').
-spec forward_message(partisan:server_ref(), term(), partisan:forward_opts()) -> ok | {error, term()}.
forward_message(ServerRef, Msg, Opts) -> partisan:forward_message(ServerRef, Msg, Opts).

%% @doc `partisan:forward_message/4' (`Node', `ServerRef', `Msg', `Opts').
-spec forward_message(node(), partisan:server_ref(), term(), partisan:forward_opts()) -> ok | {error, term()}.
forward_message(Node, ServerRef, Msg, Opts) -> partisan:forward_message(Node, ServerRef, Msg, Opts).

%% @doc `partisan:cast_message/2'.
-spec cast_message(partisan:server_ref(), term()) -> ok | {error, term()}.
cast_message(ServerRef, Msg) -> partisan:cast_message(ServerRef, Msg).

%% @doc `partisan:cast_message/3' (`ServerRef', `Msg', `Opts').
-spec cast_message(partisan:server_ref(), term(), partisan:forward_opts()) -> ok | {error, term()}.
cast_message(ServerRef, Msg, Opts) -> partisan:cast_message(ServerRef, Msg, Opts).

%% @doc `partisan:cast_message/4' (`Node', `ServerRef', `Msg', `Opts').
-spec cast_message(node(), partisan:server_ref(), term(), partisan:forward_opts()) -> ok | {error, term()}.
cast_message(Node, ServerRef, Msg, Opts) -> partisan:cast_message(Node, ServerRef, Msg, Opts).

%% @doc Sends `Msg' to the peer service manager of `Node'
%% (`partisan_peer_service_manager:send_message/2').
-spec send_message(node(), term()) -> ok | {error, term()}.
send_message(Node, Msg) -> partisan_peer_service_manager:send_message(Node, Msg).

%% @doc Handles a message for this node's manager
%% (`partisan_peer_service_manager:receive_message/3').
-spec receive_message(node(), atom(), term()) -> ok | {error, term()}.
receive_message(From, Channel, Msg) -> partisan_peer_service_manager:receive_message(From, Channel, Msg).

%% @doc `partisan_peer_service:on_up/2'.
-spec on_up(node() | partisan:node_spec() | any, function()) -> ok | {error, term()}.
on_up(Node, Fun) -> partisan_peer_service:on_up(Node, Fun).

%% @doc `partisan_peer_service:on_up/3'.
-spec on_up(node() | partisan:node_spec() | any, function(), map() | list()) -> ok | {error, term()}.
on_up(Node, Fun, Opts) -> partisan_peer_service:on_up(Node, Fun, Opts).

%% @doc `partisan_peer_service:on_down/2'.
-spec on_down(node() | partisan:node_spec() | any, function()) -> ok | {error, term()}.
on_down(Node, Fun) -> partisan_peer_service:on_down(Node, Fun).

%% @doc `partisan_peer_service:on_down/3'.
-spec on_down(node() | partisan:node_spec() | any, function(), map() | list()) -> ok | {error, term()}.
on_down(Node, Fun, Opts) -> partisan_peer_service:on_down(Node, Fun, Opts).

%% @doc `partisan_peer_service:inject_partition/2'.
-spec inject_partition(node() | partisan:node_spec(), term()) -> {ok, node()} | {error, term()}.
inject_partition(Node, TTL) -> partisan_peer_service:inject_partition(Node, TTL).

%% @doc `partisan_peer_service:resolve_partition/1'.
-spec resolve_partition(node()) -> ok | {error, term()}.
resolve_partition(Ref) -> partisan_peer_service:resolve_partition(Ref).

%% @doc `partisan_peer_service:partitions/0'.
-spec partitions() -> {ok, [{node(), node()}]}.
partitions() -> partisan_peer_service:partitions().

%% @doc `partisan_peer_service:reserve/1'.
-spec reserve(atom()) -> ok | {error, no_available_slots}.
reserve(Tag) -> partisan_peer_service:reserve(Tag).

%% @doc The node specs in a membership state (`partisan_peer_service_manager:decode/1'; v5's
%% managers return specs here, `partisan_peer_service:decode/1' their names).
-spec decode(term()) -> [partisan:node_spec() | #{name := node()}].
decode(State) -> partisan_peer_service_manager:decode(State).

%% @doc `partisan_peer_service:get_local_state/0'.
-spec get_local_state() -> {ok, #{atom() => [node()]}}.
get_local_state() -> partisan_peer_service:get_local_state().

%% @doc `partisan_peer_service:update_members/1'.
-spec update_members([node() | partisan:node_spec()]) -> ok | {error, term()}.
update_members(Members) -> partisan_peer_service:update_members(Members).

%% @doc Whether the manager supports `Capability'
%% (`partisan_peer_service_manager:supports_capability/1').
-spec supports_capability(atom()) -> boolean().
supports_capability(Capability) -> partisan_peer_service_manager:supports_capability(Capability).
