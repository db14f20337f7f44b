%% @doc Plumbing shared by the OTP layer (monitors, behaviours, rpc): where a server reference
%% lives, and how a message of the OTP layer reaches a process on another node.
%%
%% On the full mesh, messages of the OTP layer go straight to the node on the channel asked for:
%% every member is linked, and a link that drops means the node is down (monitors fire). On the
%% other overlays (HyParView, client-server, static, an Erlang membership strategy) a node may be
%% reachable only through others, and a neighbour's links close whenever the overlay changes its
%% views, so they go through the overlay with `ack' (`partisan_nif:send_acked_transitive/3'):
%% delivered once and in order, sent again until the node acknowledges them. A call, a monitor
%% request or a `'DOWN'' is never lost to a view change.
-module(partisan_otp).

-export([send/4, send_to/3, resolve/1, dest/1, local/1, node_of/1, is_full_mesh/0,
         relay_for/1, relay_name/1, relays/0, channel/1, server_channel/2]).
%% Run on the target node for the `partisan' process functions.
-export([whereis_local/1, exit_local/2, erlang_on_local/3]).

-define(SERVER_CHANNELS, partisan_server_channels).

-define(RELAYS, 8).

-type server_ref() :: pid() | atom() | {atom(), node()} | {global, term()} | {via, module(), term()}
                    | partisan_remote_ref:remote_ref().
-type send_opts() :: #{channel => atom(), key => pid() | non_neg_integer() | undefined}.
-export_type([server_ref/0, send_opts/0]).

%% @doc Sends `Msg' to `Dest' on `Node' for the OTP layer: on the full mesh directly on the
%% channel (`key' picks the connection: a pid, the one that pid's own messages take); elsewhere
%% through the overlay with `ack', on the default channel.
-spec send(node(), partisan_nif:dest(), term(), send_opts()) -> ok | {error, term()}.
send(Node, Dest, Msg, Opts) ->
    case is_full_mesh() orelse Node =:= partisan:node() of
        true -> partisan_nif:send(Node, maps:get(channel, Opts, undefined), maps:get(key, Opts, undefined), Dest, Msg);
        false -> partisan_nif:send_acked_transitive(Node, Dest, Msg)
    end.

%% @doc Sends `Msg' to a server reference wherever it lives, as `gen_server:cast/2' does: no
%% error for a name that is not registered; `{error, Reason}' when it cannot leave this node.
-spec send_to(server_ref(), term(), atom()) -> ok | {error, term()}.
send_to(Server, Msg, Channel) ->
    case resolve(Server) of
        {local, Proc} -> catch erlang:send(Proc, Msg), ok;
        {remote, Node, Dest} -> send(Node, Dest, Msg, #{channel => Channel});
        undefined -> ok
    end.

%% @doc Where a server reference lives: `{local, Ref}' (for OTP's own functions), `{remote, Node,
%% Dest}' (`Dest' addresses it on `Node'), or `undefined' (a `global' or `via' name that is not
%% registered). Raises `badarg' for anything that is not a server reference.
-spec resolve(server_ref()) -> {local, pid() | atom()} | {remote, node(), partisan_nif:dest()} | undefined.
resolve(Pid) when is_pid(Pid) ->
    case node(Pid) =:= node() of
        true -> {local, Pid};
        false -> {remote, node(Pid), Pid}
    end;
resolve(Name) when is_atom(Name) ->
    {local, Name};
resolve({Name, Node}) when is_atom(Name), is_atom(Node) ->
    case Node =:= partisan:node() of
        true -> {local, Name};
        false -> {remote, Node, dest(Name)}
    end;
resolve({global, Name}) ->
    resolve_name(global:whereis_name(Name));
resolve({via, Mod, Name}) when is_atom(Mod) ->
    resolve_name(Mod:whereis_name(Name));
resolve(Ref) ->
    Node = partisan_remote_ref:node(Ref),
    case Node =:= partisan:node() of
        true -> {local, partisan_remote_ref:to_pid_or_name(Ref)};
        false -> {remote, Node, dest(Ref)}
    end.

resolve_name(Pid) when is_pid(Pid) -> resolve(Pid);
resolve_name(_) -> undefined.

%% @doc How the data plane addresses a process reference on its own node. Names travel as
%% binaries, so the receiving node never has to create an atom to decode a request for a name
%% nobody registered there. Raises `badarg' for a term that is not a pid, a name or a remote
%% reference.
-spec dest(pid() | atom() | {atom(), node()} | partisan_remote_ref:remote_ref()) -> partisan_nif:dest().
dest(Pid) when is_pid(Pid) -> Pid;
dest(Name) when is_atom(Name) -> atom_to_binary(Name);
dest({Name, Node}) when is_atom(Name), is_atom(Node) -> atom_to_binary(Name);
dest(Ref) ->
    case partisan_remote_ref:target(Ref) of
        {pid, Id, Serial} -> {pid_id, Id, Serial};
        {name, Name} -> Name;
        {ref, _} -> error(badarg)
    end.

%% @doc The local process a `dest/1' names on this node: a pid or a registered name (an existing
%% atom), or `error' when it cannot name one here.
-spec local(partisan_nif:dest()) -> {ok, pid() | atom()} | error.
local(Pid) when is_pid(Pid) ->
    case node(Pid) =:= node() of
        true -> {ok, Pid};
        false -> error
    end;
local(Name) when is_atom(Name) ->
    {ok, Name};
local(Name) when is_binary(Name) ->
    try {ok, binary_to_existing_atom(Name)} catch error:badarg -> error end;
local({pid_id, Id, Serial}) when is_integer(Id), is_integer(Serial) ->
    try {ok, list_to_pid("<0." ++ integer_to_list(Id) ++ "." ++ integer_to_list(Serial) ++ ">")}
    catch error:badarg -> error
    end;
local(_) ->
    error.

%% @doc The node of a process reference: a pid, `{Name, Node}', a local name or a remote reference.
-spec node_of(pid() | atom() | {atom(), node()} | partisan_remote_ref:remote_ref()) -> node().
node_of(Pid) when is_pid(Pid) -> node(Pid);
node_of(Name) when is_atom(Name) -> partisan:node();
node_of({Name, Node}) when is_atom(Name), is_atom(Node) -> Node;
node_of(Ref) -> partisan_remote_ref:node(Ref).

%% @doc Whether every member links to every other (the native full mesh): then a node that is not
%% linked is down, and nothing is relayed.
-spec is_full_mesh() -> boolean().
is_full_mesh() ->
    partisan_config:get(peer_service_manager, partisan_pluggable_peer_service_manager)
        =:= partisan_pluggable_peer_service_manager
    andalso partisan_config:get(membership_strategy, partisan_full_membership_strategy)
        =:= partisan_full_membership_strategy.

%% @doc The call relay (see `partisan_call_relay') that serves calls from `Caller' on every node:
%% calls of one process always use the same relay, which keeps them in order.
-spec relay_for(pid()) -> atom().
relay_for(Caller) -> relay_name(erlang:phash2(Caller, ?RELAYS)).

%% @doc The registered name of relay `N' (0-based). Part of the wire protocol: every node runs
%% the same relays.
-spec relay_name(0..7) -> atom().
relay_name(0) -> partisan_call_relay_0;
relay_name(1) -> partisan_call_relay_1;
relay_name(2) -> partisan_call_relay_2;
relay_name(3) -> partisan_call_relay_3;
relay_name(4) -> partisan_call_relay_4;
relay_name(5) -> partisan_call_relay_5;
relay_name(6) -> partisan_call_relay_6;
relay_name(7) -> partisan_call_relay_7.

%% @doc The names of every relay.
-spec relays() -> [atom()].
relays() -> [relay_name(N) || N <- lists:seq(0, ?RELAYS - 1)].

%% @doc The channel in an option list or map (`{channel, C}'); if none, the calling process's
%% (`partisan_gen:set_opts/1'), else `undefined' (the default channel).
-spec channel([term()] | map()) -> atom().
channel(Opts) when is_map(Opts) -> maps:get(channel, Opts, partisan_gen:get_opts(channel));
channel(Opts) when is_list(Opts) -> proplists:get_value(channel, Opts, partisan_gen:get_opts(channel)).

%% @doc The channel answers of the local server `Proc' travel on when it was started with
%% `{channel, C}' (see `partisan_monitor:server_channel/2'), else `Default'.
-spec server_channel(pid() | atom(), atom()) -> atom().
server_channel(Proc, Default) ->
    case ets:info(?SERVER_CHANNELS, size) of
        N when is_integer(N), N > 0 ->
            Pid = case is_pid(Proc) of true -> Proc; false -> whereis(Proc) end,
            case ets:lookup(?SERVER_CHANNELS, Pid) of
                [{_, Channel}] -> Channel;
                [] -> Default
            end;
        _ ->
            Default
    end.

%% @private The pid a name of this node stands for, or `undefined'.
-spec whereis_local(partisan_nif:dest()) -> pid() | undefined.
whereis_local(Dest) ->
    case local(Dest) of
        {ok, Name} when is_atom(Name) -> whereis(Name);
        _ -> undefined
    end.

%% @private `erlang:exit/2' to a process of this node.
-spec exit_local(partisan_nif:dest(), term()) -> true.
exit_local(Dest, Reason) ->
    case local_pid(Dest) of
        undefined -> true;
        Pid -> exit(Pid, Reason)
    end.

%% @private `erlang:F(Pid, Args...)' for a process of this node; for one that does not exist,
%% `false' (`is_process_alive') or `undefined' (`process_info').
-spec erlang_on_local(partisan_nif:dest(), atom(), [term()]) -> term().
erlang_on_local(Dest, F, Args) ->
    case {local_pid(Dest), F} of
        {undefined, is_process_alive} -> false;
        {undefined, _} -> undefined;
        {Pid, _} -> erlang:apply(erlang, F, [Pid | Args])
    end.

local_pid(Dest) ->
    case local(Dest) of
        {ok, Pid} when is_pid(Pid) -> Pid;
        {ok, Name} -> whereis(Name);
        error -> undefined
    end.
