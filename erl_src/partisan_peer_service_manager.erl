%% @doc The process that owns the lifetime of the Rust data plane, for every manager.
%%
%% Membership, connections and gossip run in the Rust runtime; this process starts it with the
%% validated config (the overlay chosen by `peer_service_manager') when the application starts,
%% and stops it (closing every socket and thread) when the application stops. API calls do not
%% go through this process. The manager modules Partisan users name in their config
%% (`partisan_pluggable_peer_service_manager', ...) start this process.
-module(partisan_peer_service_manager).
-behaviour(gen_server).

-export([start_link/0, node_spec/0]).
-export([init/1, handle_call/3, handle_cast/2, terminate/2]).

%% @doc Starts the data plane and registers the manager.
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc This node's spec, with the ports actually bound.
-spec node_spec() -> partisan:node_spec().
node_spec() ->
    persistent_term:get({?MODULE, node_spec}).

%% @private
init([]) ->
    process_flag(trap_exit, true),
    Config = maps:from_list([{K, partisan_config:get(K)} || K <- config_keys()]),
    Events = whereis(partisan_peer_service_events),
    case partisan_nif:start((partisan_config:nif_config(Config))#{events => Events}) of
        {ok, Spec} ->
            persistent_term:put({?MODULE, node_spec}, Spec),
            {ok, #{}};
        {error, Reason} ->
            {stop, {data_plane_start_failed, Reason}}
    end.

config_keys() ->
    [name, listen_addrs, channels, cookie, connection_interval, connection_jitter,
     periodic_interval, max_frame_size, max_queue_bytes, decode, connect_timeout, io_threads,
     peer_service_manager, tag, hyparview].

%% @private
handle_call(_, _From, S) -> {reply, {error, unknown_call}, S}.

%% @private
handle_cast(_, S) -> {noreply, S}.

%% @private
terminate(_Reason, _S) ->
    partisan_nif:stop(),
    persistent_term:erase({?MODULE, node_spec}),
    ok.
