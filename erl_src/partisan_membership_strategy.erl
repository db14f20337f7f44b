%% @doc Bring your own overlay in Erlang: a membership strategy decides who the members are;
%% the Rust data plane owns the connections.
%%
%% Configure `{membership_strategy, MyModule}' with the default `peer_service_manager'
%% (`partisan_pluggable_peer_service_manager'). `partisan_peer_service_manager' then hosts
%% `MyModule': it calls `init/1' at start, `join/3' and `leave/2' from
%% `partisan_peer_service:join/1' and `leave/0,1', `handle_message/2' for each message another
%% node's strategy sent, and `periodic/1' every `periodic_interval' ms. Every callback returns the
%% member list — the data plane keeps links (all channels) to exactly those nodes and closes the
%% others — and the messages to send, as `[{Node, Message}]'. Messages travel on the membership
%% channel, encoded with `term_to_binary/1'; a message to a node whose link is not up yet is
%% retried for 10 seconds, then dropped with a warning.
%%
%% The default strategy (`partisan_full_membership_strategy') is the Rust full mesh itself, so it
%% needs no Erlang module.
-module(partisan_membership_strategy).

-type state() :: term().
-type outgoing() :: [{node(), term()}].
-export_type([state/0, outgoing/0]).

%% This node's spec; returns the initial members (this node may be included) and the state.
-callback init(Myself :: partisan:node_spec()) ->
    {ok, Members :: [partisan:node_spec()], state()}.

%% `partisan_peer_service:join/1' of `Spec'; `PeerState' is `undefined' (the peer's state is not
%% shipped: exchange it with messages).
-callback join(state(), Spec :: partisan:node_spec(), PeerState :: term()) ->
    {ok, Members :: [partisan:node_spec()], outgoing(), state()}.

%% `partisan_peer_service:leave/0,1': `Spec' leaves (this node's own spec for `leave/0').
-callback leave(state(), Spec :: partisan:node_spec()) ->
    {ok, Members :: [partisan:node_spec()], outgoing(), state()}.

%% Every `periodic_interval' milliseconds.
-callback periodic(state()) ->
    {ok, Members :: [partisan:node_spec()], outgoing(), state()}.

%% A message another node's strategy sent to this one.
-callback handle_message(state(), Message :: term()) ->
    {ok, Members :: [partisan:node_spec()], outgoing(), state()}.

%% Partisan's diff of member lists; the data plane computes link changes itself, so this is
%% optional and unused here.
-callback compare(Members :: [partisan:node_spec()], state()) ->
    {Joiners :: [partisan:node_spec()], Leavers :: [partisan:node_spec()]}.

-optional_callbacks([compare/2]).
