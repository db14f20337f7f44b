%% @doc Static: a node connects to the nodes it joins and to those that join it, and to no one learned from gossip.
%%
%% Select it with `{peer_service_manager, ?MODULE}' in the `partisan' application env; the data
%% plane itself is run by `partisan_peer_service_manager'.
-module(partisan_static_peer_service_manager).

-export([start_link/0]).
-include("partisan_interposition_api.hrl").

%% @doc Starts the data plane with this overlay.
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    partisan_peer_service_manager:start_link().
