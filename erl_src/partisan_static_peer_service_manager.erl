%% @doc Static: a node connects to the nodes it joins and to those that join it, and to no one learned from gossip.
%%
%% Select it with `{peer_service_manager, ?MODULE}' in the `partisan' application env; the data
%% plane itself is run by `partisan_peer_service_manager'. Partisan v5's manager API
%% (`members/0', `forward_message/2,3,4', `cast_message/2,3,4', `on_up/2,3', ...) is here, as on
%% every manager: see `partisan_peer_service_manager_api.hrl'.
-module(partisan_static_peer_service_manager).

-include("partisan_peer_service_manager_api.hrl").
