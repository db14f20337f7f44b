%% @doc HyParView: each node keeps a small symmetric active view of neighbours (links on every
%% channel) and a larger passive view to repair it from, so clusters scale to thousands of nodes.
%% Configure it with the `hyparview' map (Partisan's keys and defaults).
%%
%% Select it with `{peer_service_manager, ?MODULE}' in the `partisan' application env; the data
%% plane itself is run by `partisan_peer_service_manager'. `partisan_peer_service:members/0' is
%% the active view; `get_local_state/0' has the active, passive and unreachable views.
-module(partisan_hyparview_peer_service_manager).

-export([start_link/0]).
-include("partisan_interposition_api.hrl").

%% @doc Starts the data plane with this overlay.
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    partisan_peer_service_manager:start_link().
