%% @doc Top supervisor: the events process first (the data plane reports to it), the OTP layer
%% (monitors, call relays), then the peer service manager, which owns the data plane's lifetime,
%% and the peer discovery agent.
-module(partisan_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

%% @doc Starts the supervision tree.
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

%% @private
-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    Manager = partisan_config:get(peer_service_manager),
    Lanes = partisan_delivery:lanes(),
    Children = [#{id => partisan_peer_service_events,
                  start => {partisan_peer_service_events, start_link, []}},
                %% Received terms that only a scheduler may decode (maps of more than 32 keys).
                #{id => partisan_decoder, start => {partisan_decoder, start_link, []}}]
               %% Received streams are delivered from the schedulers (before the data plane
               %% starts: the lanes' count is fixed when the last one registers).
               ++ [#{id => {partisan_delivery, I}, start => {partisan_delivery, start_link, [I, Lanes]}}
                   || I <- lists:seq(0, Lanes - 1)]
               ++ [#{id => partisan_plumtree_broadcast,
                     start => {partisan_plumtree_broadcast, start_link, []}},
                   %% The OTP layer is ready before the data plane accepts the first connection:
                   %% a peer's first monitor request or call must find it.
                   #{id => partisan_monitor, start => {partisan_monitor, start_link, []}},
                   %% Interposition funs and delays, then causal delivery (its envelopes arrive
                   %% through interposition when funs are installed).
                   #{id => partisan_interposition, start => {partisan_interposition, start_link, []}},
                   #{id => partisan_causality_backend,
                     start => {partisan_causality_backend, start_link, []}}]
               ++ [#{id => {partisan_call_relay, N}, start => {partisan_call_relay, start_link, [N]}}
                   || N <- lists:seq(0, length(partisan_otp:relays()) - 1)]
               %% Stopping the manager flushes the send queues first (stop_flush_timeout), then
               %% closes the runtime (up to 2 s more).
               ++ [#{id => Manager, start => {Manager, start_link, []},
                     shutdown => partisan_config:get(stop_flush_timeout) + 5000,
                     modules => [Manager, partisan_peer_service_manager]},
                   %% Joins the nodes the `peer_discovery' backend finds (disabled without it).
                   #{id => partisan_peer_discovery_agent,
                     start => {partisan_peer_discovery_agent, start_link, []}}],
    {ok, {#{strategy => rest_for_one, intensity => 3, period => 10}, Children}}.
