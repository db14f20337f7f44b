%% @doc Client-server: servers connect to everyone, clients only to servers (config `tag' is `server' or `client').
%%
%% Select it with `{peer_service_manager, ?MODULE}' in the `partisan' application env; the data
%% plane itself is run by `partisan_peer_service_manager'. Partisan v5's manager API
%% (`members/0', `forward_message/2,3,4', `cast_message/2,3,4', `on_up/2,3', ...) is here, as on
%% every manager: see `partisan_peer_service_manager_api.hrl'.
-module(partisan_client_server_peer_service_manager).

-include("partisan_peer_service_manager_api.hrl").
