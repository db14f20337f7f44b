%% @doc HyParView: each node keeps a small symmetric active view of neighbours (links on every
%% channel) and a larger passive view to repair it from, so clusters scale to thousands of nodes.
%% Configure it with the `hyparview' map (Partisan's keys and defaults).
%%
%% Select it with `{peer_service_manager, ?MODULE}' in the `partisan' application env; the data
%% plane itself is run by `partisan_peer_service_manager'. Partisan v5's manager API
%% (`members/0', `forward_message/2,3,4', `cast_message/2,3,4', `on_up/2,3', ...) is here, as on
%% every manager: see `partisan_peer_service_manager_api.hrl'. `partisan_peer_service:members/0' is
%% the active view; `get_local_state/0' has the active, passive and unreachable views.
-module(partisan_hyparview_peer_service_manager).

-include("partisan_peer_service_manager_api.hrl").
