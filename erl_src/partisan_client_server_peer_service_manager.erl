%% @doc Client-server: servers connect to everyone, clients only to servers (config `tag' is `server' or `client').
%%
%% Select it with `{peer_service_manager, ?MODULE}' in the `partisan' application env; the data
%% plane itself is run by `partisan_peer_service_manager'.
-module(partisan_client_server_peer_service_manager).

-export([start_link/0]).
-include("partisan_interposition_api.hrl").

%% @doc Starts the data plane with this overlay.
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    partisan_peer_service_manager:start_link().
