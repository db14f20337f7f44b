%% @doc Top supervisor: the events process first (the data plane reports to it), then the peer
%% service manager, which owns the data plane's lifetime.
-module(partisan_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

%% @doc Starts the supervision tree.
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

%% @private
init([]) ->
    Manager = partisan_config:get(peer_service_manager),
    Children = [#{id => partisan_peer_service_events,
                  start => {partisan_peer_service_events, start_link, []}},
                #{id => partisan_plumtree_broadcast,
                  start => {partisan_plumtree_broadcast, start_link, []}},
                %% Stopping the manager flushes the send queues first (stop_flush_timeout), then
                %% closes the runtime (up to 2 s more).
                #{id => Manager, start => {Manager, start_link, []},
                  shutdown => partisan_config:get(stop_flush_timeout, 5000) + 5000,
                  modules => [Manager, partisan_peer_service_manager]}],
    {ok, {#{strategy => rest_for_one, intensity => 3, period => 10}, Children}}.
