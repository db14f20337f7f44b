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
                #{id => Manager, start => {Manager, start_link, []}, shutdown => 10000,
                  modules => [Manager, partisan_peer_service_manager]}],
    {ok, {#{strategy => rest_for_one, intensity => 3, period => 10}, Children}}.
