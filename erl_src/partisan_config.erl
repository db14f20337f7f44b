%% @doc Configuration of the `partisan' application: one accessor over the application env.
%%
%% `init/0' validates the env once at start, normalises it and caches the result in
%% `persistent_term', so `get/1,2' on the hot path is a constant-time read. A bad value stops the
%% start with `{error, {invalid_config, Key, Why}}', where `Why' says what to fix.
%%
%% Each key has one owner, which holds its default and its checks. The data plane owns the keys
%% it runs with (`partisan_nif:config_keys/0': listen addresses, channels, timing, limits,
%% `hyparview', `broadcast', `decode', ...; the table is `partisan_net::config'): this module
%% passes what the user set through `partisan_nif:check_config/1' and caches the effective values
%% that come back, so what Erlang reads is what the data plane runs with. This module owns the
%% keys only the Erlang side can decide or reads: `name', `cookie', `peer_service_manager',
%% `tag', `membership_strategy', `broadcast_mods', `monitor_probe_*', `pid_encoding',
%% `remote_ref_*', and the shape of `channels' (lists become a map). TLS (`tls',
%% `tls_server_options', `tls_client_options') is the data plane's: it reads the certificate
%% files at start, and again when `set/2' changes a TLS key on a running node.
-module(partisan_config).

-export([init/0, get/1, get/2, set/2, channels/0, parallelism/0, default_channel/0,
         channel_opts/1, default_channel_opts/0, get_with_opts/2, get_with_opts/3,
         listen_addrs/0, seed/0, seed/1, trace/2,
         normalise/1, nif_config/0, nif_config/1, warnings/1, v5_keys/0, channel_map/2]).

-compile({no_auto_import, [get/1]}).

-define(KEY(K), {?MODULE, K}).
-define(MEMBERSHIP_CHANNEL, partisan_membership).
-define(SUPPORTED_MANAGERS, [partisan_pluggable_peer_service_manager,
                             partisan_client_server_peer_service_manager,
                             partisan_static_peer_service_manager,
                             partisan_hyparview_peer_service_manager]).
-define(FULL_MEMBERSHIP, partisan_full_membership_strategy).
%% Partisan v5's keys that this release accepts without implementing them: `{Key, Inert}' where
%% `Inert' is the value that asks for nothing this release does not do (no warning), or `any'
%% (a warning whatever the value). The node starts; one warning names those set.
-define(NOT_IMPLEMENTED,
        [{binary_padding, false}, {binary_padding_term, undefined},
         {broadcast_start_exchange_limit, any}, {channel_fallback, true},
         {connect_disterl, false}, {disable_fast_forward, false}, {disable_fast_receive, false},
         {distance_enabled, false}, {exchange_selection, any}, {fanout, any},
         {forward_options, any}, {gossip, true}, {membership_binary_compression, false},
         {membership_strategy_tracing, false}, {metadata, #{}}, {nodestring, any},
         {orchestration_strategy, any}, {random_seed, any}, {ref_encoding, false},
         {register_pid_for_encoding, false}, {replaying, false}, {reservations, []},
         {shrinking, false}, {tracing, false}, {transmission_logging_mfa, undefined},
         {tls_options, []}, {xbot_interval, any}, {peer_host, any},
         %% v5's deprecated top-level HyParView names (inside `hyparview' they are renamed)
         {arwl, any}, {prwl, any}, {max_active_size, any}, {min_active_size, any},
         {max_passive_size, any}, {passive_view_shuffle_period, any},
         {random_promotion, any}, {random_promotion_period, any}]).
%% v5's names inside `hyparview' for its keys.
-define(HYPARVIEW_RENAMES, #{arwl => active_rwl, prwl => passive_rwl,
                             max_active_size => active_max_size,
                             min_active_size => active_min_size,
                             max_passive_size => passive_max_size,
                             passive_view_shuffle_period => shuffle_interval,
                             random_promotion_period => random_promotion_interval}).
%% `hyparview' keys of v5 that are not implemented (X-BOT): `{Key, Inert}' as above.
-define(HYPARVIEW_NOT_IMPLEMENTED, [{xbot_enabled, false}, {xbot_interval, any}]).
%% Every key of Partisan v5's configuration that this release implements.
-define(V5_IMPLEMENTED,
        [broadcast, broadcast_mods, causal_labels, channels, connection_interval,
         connection_jitter, connection_ping, egress_delay, exchange_tick_period, hyparview, ingress_delay,
         lazy_tick_period, listen_addrs, membership_strategy, name, parallelism,
         partisan_peer_service_manager, peer_discovery, peer_ip, peer_port,
         peer_service_manager, periodic_enabled, periodic_interval, pid_encoding,
         remote_ref_as_uri, remote_ref_format, remote_ref_uri_padding, retransmit_interval, tag, tls,
         tls_client_options, tls_server_options]).

-type channel() :: atom().
-type channel_opts() :: #{parallelism := pos_integer(), monotonic := boolean(),
                          compression => boolean() | 0..9}.
-export_type([channel/0, channel_opts/0]).

%% @doc Validates and caches the application env. Called by the application at start.
-spec init() -> ok | {error, {invalid_config, atom(), string()}}.
%%
%% On a VM that is not alive, without a `name' key, the node gets a generated name
%% (`partisan_<hex>@<host>'), kept in the application env (as `set/2' would) so that the next
%% start in the same VM reuses it; the VM started alive since, the generated name is dropped for
%% `node()'.
init() ->
    Env = forget_generated_name(maps:from_list(application:get_all_env(partisan))),
    case normalise(Env) of
        {ok, Config = #{name := Name}} ->
            is_map_key(name, Env) orelse erlang:node() =/= nonode@nohost orelse
                remember_generated_name(Name),
            [logger:warning("partisan: ~ts", [W]) || W <- warnings(Env)],
            maps:foreach(fun(K, V) -> persistent_term:put(?KEY(K), V) end, Config);
        {error, _} = Error ->
            Error
    end.

%% @doc What a valid env asks for that this release does not do, one sentence each (logged once
%% at start): Partisan v5 keys that are not implemented, and TLS options without `tls => true'.
-spec warnings(map()) -> [string()].
warnings(Env) ->
    HV = hyparview_map(maps:get(hyparview, Env, #{})),
    Unused = [K || {K, Inert} <- ?NOT_IMPLEMENTED, is_map_key(K, Env), maps:get(K, Env) =/= Inert]
        ++ [{hyparview, K} || {K, Inert} <- ?HYPARVIEW_NOT_IMPLEMENTED, is_map_key(K, HV),
                              maps:get(K, HV) =/= Inert],
    [lists:flatten(io_lib:format("config keys ~p are Partisan v5 keys this release does not "
                                 "implement; they are ignored", [lists:usort(Unused)]))
     || Unused =/= []]
    ++ [lists:flatten(io_lib:format("~p is set but tls is not true: connections are not "
                                    "encrypted (set tls => true to use it)", [K]))
        || K <- [tls_server_options, tls_client_options], is_map_key(K, Env),
           maps:get(K, Env) =/= [], maps:get(tls, Env, false) =/= true].

%% @doc Partisan v5's configuration keys and what this release does with each: `implemented',
%% or `{ignored, Inert}' (accepted; a warning names it unless its value is `Inert'). Keys
%% inside `hyparview' are `{hyparview, Key}'.
-spec v5_keys() -> [{atom() | {hyparview, atom()}, implemented | {ignored, term()}}].
v5_keys() ->
    [{K, implemented} || K <- ?V5_IMPLEMENTED]
        ++ [{K, {ignored, I}} || {K, I} <- ?NOT_IMPLEMENTED]
        ++ [{{hyparview, K}, {ignored, I}} || {K, I} <- ?HYPARVIEW_NOT_IMPLEMENTED].

remember_generated_name(Name) ->
    persistent_term:put(?KEY(generated_name), Name),
    application:set_env(partisan, name, Name).

forget_generated_name(Env = #{name := Name}) ->
    case persistent_term:get(?KEY(generated_name), undefined) of
        Name when erlang:node() =/= nonode@nohost ->
            application:unset_env(partisan, name),
            maps:remove(name, Env);
        _ ->
            Env
    end;
forget_generated_name(Env) ->
    Env.

%% @doc The value of `Key'; errors with `{unknown_config, Key}' when unset and without default.
-spec get(atom()) -> term().
get(Key) ->
    case get(Key, '$undefined') of
        '$undefined' -> error({unknown_config, Key});
        Value -> Value
    end.

%% @doc The value of `Key', or `Default'.
-spec get(atom(), term()) -> term().
get(Key, Default) ->
    case persistent_term:get(?KEY(Key), '$undefined') of
        '$undefined' -> application:get_env(partisan, Key, Default);
        Value -> Value
    end.

%% @doc Sets `Key' (in the env and the cache). Takes effect for the data plane at next start,
%% except `tls_server_options' and `tls_client_options' on a node running with TLS: their
%% certificate files are read at once and used by the connections made from then on
%% (certificate rotation without a restart; force a reconnect to use them on links already up).
%% A file that cannot be read leaves the running configuration as it was and returns
%% `{error, {invalid_config, Key, Why}}'.
-spec set(atom(), term()) -> ok | {error, {invalid_config, atom(), term()}}.
set(Key, Value) when Key =:= tls_server_options; Key =:= tls_client_options ->
    case get(tls, false) =:= true andalso whereis(partisan_sup) =/= undefined of
        true ->
            TlsKeys = #{tls => true,
                        tls_server_options => get(tls_server_options, []),
                        tls_client_options => get(tls_client_options, []),
                        Key => Value},
            case partisan_nif:reload_tls(TlsKeys) of
                ok -> store(Key, Value);
                {error, not_started} -> store(Key, Value);
                {error, {invalid_config, K, Why}} -> {error, {invalid_config, K, Why}}
            end;
        false ->
            store(Key, Value)
    end;
set(Key, Value) ->
    store(Key, Value).

store(Key, Value) ->
    application:set_env(partisan, Key, Value),
    persistent_term:put(?KEY(Key), Value),
    ok.

%% @doc The normalised channels map, default and membership channels included.
-spec channels() -> #{channel() => channel_opts()}.
channels() -> get(channels).

%% @doc The default number of connections per channel.
-spec parallelism() -> pos_integer().
parallelism() -> get(parallelism, 1).

%% @doc The default channel's name, `undefined' as in Partisan.
-spec default_channel() -> undefined.
default_channel() -> undefined.

%% @doc The options of channel `Name' (`#{parallelism, monotonic, ...}'); raises `badarg' for a
%% channel that is not configured, as in v5.
-spec channel_opts(channel()) -> channel_opts().
channel_opts(Name) when is_atom(Name) ->
    case maps:find(Name, get(channels, #{})) of
        {ok, Opts} -> Opts;
        error -> erlang:error(badarg, [Name])
    end;
channel_opts(Name) ->
    erlang:error(badarg, [Name]).

%% @doc The options of the default channel (`undefined').
-spec default_channel_opts() -> channel_opts().
default_channel_opts() -> channel_opts(default_channel()).

%% @doc `Key''s value in `Opts' (a map or a proplist) if there, else `get/1''s.
-spec get_with_opts(atom(), map() | [{atom(), term()}]) -> term().
get_with_opts(Key, Opts) ->
    case find_opt(Key, Opts) of
        {ok, Value} -> Value;
        error -> get(Key)
    end.

%% @doc `Key''s value in `Opts' (a map or a proplist) if there, else `get(Key, Default)'.
-spec get_with_opts(atom(), map() | [{atom(), term()}], term()) -> term().
get_with_opts(Key, Opts, Default) ->
    case find_opt(Key, Opts) of
        {ok, Value} -> Value;
        error -> get(Key, Default)
    end.

find_opt(Key, Opts) when is_map(Opts) -> maps:find(Key, Opts);
find_opt(Key, Opts) when is_list(Opts) ->
    case lists:keyfind(Key, 1, Opts) of
        {Key, Value} -> {ok, Value};
        false -> error
    end;
find_opt(Key, Opts) ->
    erlang:error(badarg, [Key, Opts]).

%% @doc This node's listen addresses: the ones bound (the ports chosen when `0') while partisan
%% runs, else the configured ones.
-spec listen_addrs() -> [#{ip := inet:ip_address(), port := inet:port_number()}].
listen_addrs() ->
    try partisan_peer_service_manager:node_spec() of
        #{listen_addrs := Addrs} -> Addrs
    catch
        error:badarg -> get(listen_addrs, [])
    end.

%% @doc Seeds the calling process's `rand' state (`exsplus'), with the `random_seed' key when it
%% is set, else with a seed made of this node's name, the time and a unique integer (v5). The
%% data plane's own randomness is not seeded by it.
-spec seed() -> rand:state().
seed() ->
    case get(random_seed, undefined) of
        undefined -> seed({erlang:phash2([partisan:node()]), erlang:monotonic_time(),
                           erlang:unique_integer()});
        Seed -> seed(Seed)
    end.

%% @doc Seeds the calling process's `rand' state with `Seed' (`exsplus').
-spec seed(rand:seed() | {integer(), integer(), integer()}) -> rand:state().
seed(Seed) -> rand:seed(exsplus, Seed).

%% @doc Logs `Message' with `Args' at `debug' level (v5's trace hook). Returns `ok'.
-spec trace(term(), term()) -> ok.
trace(Message, Args) ->
    logger:debug(#{description => "Trace", message => Message, args => Args}).

%% @doc Validates an env map and returns it with defaults filled in and values normalised.
-spec normalise(map()) -> {ok, map()} | {error, {invalid_config, atom(), string()}}.
normalise(Env0) ->
    Steps = [fun name/2, fun channels/2, fun manager/2, fun cookie/2, fun broadcast_mods/2,
             fun monitor_probe/2, fun remote_refs/2, fun peer_discovery/2,
             fun causal/2, fun delays/2, fun data_plane/2],
    try
        Env = v5_names(Env0),
        {ok, lists:foldl(fun(Step, Acc) -> Step(Env, Acc) end, Env, Steps)}
    catch
        throw:{invalid, Key, Why} -> {error, {invalid_config, Key, Why}}
    end.

-spec invalid(atom(), string(), [term()]) -> no_return().
invalid(Key, Fmt, Args) ->
    throw({invalid, Key, lists:flatten(io_lib:format(Fmt, Args))}).

%% Partisan v5's other spellings: `partisan_peer_service_manager' for `peer_service_manager',
%% `remote_ref_as_uri => true' for `remote_ref_format => uri', `hyparview' as a proplist and with
%% its old key names (X-BOT's keys, not implemented, are left out of it), and v5's forms of
%% `listen_addrs' entries.
v5_names(Env0) ->
    Env1 = case maps:take(partisan_peer_service_manager, Env0) of
        {M, E} -> maps:merge(#{peer_service_manager => M}, E);
        error -> Env0
    end,
    Env2 = case maps:take(remote_ref_as_uri, Env1) of
        {true, E2} -> maps:merge(#{remote_ref_format => uri}, E2);
        {false, E2} -> E2;
        {Other, _} -> invalid(remote_ref_as_uri, "~p must be a boolean", [Other]);
        error -> Env1
    end,
    Env3 = case maps:find(hyparview, Env2) of
        {ok, HV} ->
            Map = hyparview_map(HV),
            Env2#{hyparview => maps:without([K || {K, _} <- ?HYPARVIEW_NOT_IMPLEMENTED], Map)};
        error ->
            Env2
    end,
    case maps:find(listen_addrs, Env3) of
        {ok, Addrs} when is_list(Addrs) ->
            Port = maps:get(peer_port, Env3, maps:get(listen_port, Env3, 0)),
            Env3#{listen_addrs => lists:usort([listen_addr(A, Port) || A <- Addrs])};
        _ ->
            Env3
    end.

%% v5's forms of a listen address: `#{ip, port}' or `{IP, Port}' with the IP a tuple, string or
%% binary and the port an integer, string or binary; `"IP:Port"' (`"[IPv6]:Port"'); `"IP"' (the
%% port is `peer_port', else `listen_port', else 0: any). What is none of these goes to the
%% data plane's check as given, which refuses it naming the key.
listen_addr(#{ip := IP, port := P} = A, _Default) -> addr(IP, P, A);
listen_addr({IP, P} = A, _Default) -> addr(IP, P, A);
listen_addr(B, Default) when is_binary(B) -> listen_addr(binary_to_list(B), Default);
listen_addr([C | _] = S, Default) when is_integer(C) ->
    case string:split(S, ":", trailing) of
        ["[" ++ V6, P] -> addr(string:trim(V6, trailing, "]"), P, S);
        [IP, P] when P =/= [] -> case string:find(IP, ":") of
                                     nomatch -> addr(IP, P, S);
                                     _ -> addr(S, Default, S)          % an IPv6 address alone
                                 end;
        _ -> addr(S, Default, S)
    end;
listen_addr(Other, _Default) -> Other.

addr(IP, P, Given) ->
    case {ip(IP), port(P)} of
        {{ok, I}, {ok, N}} -> #{ip => I, port => N};
        _ -> Given
    end.

ip(T) when is_tuple(T) -> {ok, T};
ip(B) when is_binary(B) -> ip(binary_to_list(B));
ip(S) when is_list(S) -> inet:parse_address(S);
ip(_) -> error.

port(N) when is_integer(N) -> {ok, N};
port(B) when is_binary(B) -> port(binary_to_list(B));
port(S) when is_list(S) ->
    try list_to_integer(S) of N -> {ok, N} catch error:badarg -> error end;
port(_) -> error.

hyparview_map(HV) when is_map(HV) -> hyparview_map(maps:to_list(HV));
hyparview_map(HV) when is_list(HV) ->
    lists:all(fun(E) -> is_tuple(E) andalso tuple_size(E) =:= 2 end, HV) orelse
        invalid(hyparview, "~p must be a map or a proplist of {Key, Value}", [HV]),
    maps:from_list([{maps:get(K, ?HYPARVIEW_RENAMES, K), V} || {K, V} <- HV]);
hyparview_map(HV) ->
    invalid(hyparview, "~p must be a map or a proplist of {Key, Value}", [HV]).

%% `causal_labels': the labels `causal_label' may name; `causal_max_buffered' and
%% `causal_max_wait' (ours): messages per label waiting for their causal predecessors, and how
%% long each may wait, at most.
causal(Env, Acc) ->
    Labels = maps:get(causal_labels, Env, []),
    is_list(Labels) andalso lists:all(fun is_atom/1, Labels) orelse
        invalid(causal_labels, "~p must be a list of atoms (labels)", [Labels]),
    Max = maps:get(causal_max_buffered, Env, 10000),
    is_integer(Max) andalso Max >= 1 orelse
        invalid(causal_max_buffered, "~p must be a positive integer (messages)", [Max]),
    Wait = maps:get(causal_max_wait, Env, infinity),
    Wait =:= infinity orelse is_integer(Wait) andalso Wait >= 0 orelse
        invalid(causal_max_wait, "~p must be infinity or a non-negative integer (milliseconds)", [Wait]),
    Acc#{causal_labels => lists:usort(Labels), causal_max_buffered => Max, causal_max_wait => Wait}.

%% `ingress_delay', `egress_delay' (v5, for tests): milliseconds added to every message received
%% / sent.
delays(Env, Acc) ->
    lists:foldl(fun(K, A) ->
                        case maps:get(K, Env, 0) of
                            D when is_integer(D), D >= 0, D =< 60000 -> A#{K => D};
                            D -> invalid(K, "~p must be an integer from 0 to 60000 (milliseconds)", [D])
                        end
                end, Acc, [ingress_delay, egress_delay]).

%% Partisan v5: the partisan name is `node()', or on a VM that is not alive the `name' key or a
%% generated one (so `mix test', `iex -S mix' and `rebar3 shell' start with partisan as a
%% dependency).
name(Env, Acc) ->
    case maps:get(name, Env, erlang:node()) of
        nonode@nohost when is_map_key(name, Env) ->
            invalid(name, "nonode@nohost is what every VM that is not alive calls itself: "
                    "choose a name of the form name@host", []);
        nonode@nohost ->
            Acc#{name => generated_name()};
        Name when is_atom(Name) ->
            case string:split(atom_to_list(Name), "@") of
                [[_ | _], [_ | _]] -> Acc#{name => Name};
                _ -> invalid(name, "~p is not of the form name@host", [Name])
            end;
        Other ->
            invalid(name, "~p must be an atom name@host", [Other])
    end.

generated_name() ->
    Host = case inet:gethostname() of
        {ok, H} when H =/= [] -> H;
        _ -> "localhost"
    end,
    Id = binary:encode_hex(rand:bytes(6)),
    list_to_atom(lists:flatten(["partisan_", string:lowercase(binary_to_list(Id)), "@", Host])).

%% The shape of `channels' (the data plane checks the values): a map `#{Name => Opts}' or a
%% list of `Name', `{monotonic, Name}' and `{Name, Opts}', `Opts' a map or a proplist.
channels(Env, Acc) ->
    case maps:find(channels, Env) of
        {ok, Given} -> Acc#{channels => channel_shape(Given)};
        error -> maps:remove(channels, Acc)
    end.

channel_shape(Map) when is_map(Map) ->
    maps:map(fun(Name, Opts) -> channel_opts(Name, Opts) end, Map);
channel_shape(List) when is_list(List) ->
    maps:from_list([channel_entry(E) || E <- List]);
channel_shape(Other) ->
    invalid(channels, "~p must be a map #{Name => Opts} or a list of Name, {monotonic, Name} "
            "and {Name, Opts}", [Other]).

channel_entry({monotonic, Name}) when is_atom(Name) -> {Name, #{monotonic => true}};
channel_entry({Name, Opts}) when is_atom(Name) -> {Name, channel_opts(Name, Opts)};
channel_entry(Name) when is_atom(Name) -> {Name, #{}};
channel_entry(Other) ->
    invalid(channels, "channel entry ~p is not Name, {monotonic, Name} or {Name, Opts}", [Other]).

channel_opts(Name, Opts) when is_list(Opts) -> channel_opts(Name, maps:from_list(Opts));
channel_opts(Name, Opts) when is_atom(Name), is_map(Opts) -> Opts;
channel_opts(Name, Opts) ->
    invalid(channels, "channel ~p: options ~p must be a map or proplist", [Name, Opts]).

%% @doc Channels given as a map `#{Name => Opts}' or a list of `Name', `{monotonic, Name}' and
%% `{Name, Opts}' (Opts a map or proplist; `parallelism' defaults to `P', `monotonic' to
%% `false'), normalised to `#{Name => #{parallelism := N, monotonic := B}}'. Throws
%% `{invalid, channels, Why}' for anything else. For node specs (`partisan_node_spec'); the
%% configuration's channels are checked by the data plane.
-spec channel_map(term(), pos_integer()) -> #{channel() => channel_opts()}.
channel_map(Given, P) ->
    maps:map(fun(Name, Opts) ->
                     Par = maps:get(parallelism, Opts, P),
                     Mono = maps:get(monotonic, Opts, false),
                     is_integer(Par) andalso Par >= 1 andalso Par =< 256 orelse
                         invalid(channels, "channel ~p: parallelism ~p must be an integer from 1 "
                                 "to 256", [Name, Par]),
                     is_boolean(Mono) orelse
                         invalid(channels, "channel ~p: monotonic ~p must be a boolean", [Name, Mono]),
                     Opts#{parallelism => Par, monotonic => Mono}
             end, channel_shape(Given)).

manager(Env, Acc) ->
    M = maps:get(peer_service_manager, Env, partisan_pluggable_peer_service_manager),
    lists:member(M, ?SUPPORTED_MANAGERS) orelse
        invalid(peer_service_manager, "~p is not available in this release; supported: ~p",
                [M, ?SUPPORTED_MANAGERS]),
    Tag = maps:get(tag, Env, undefined),
    M =:= partisan_client_server_peer_service_manager andalso Tag =/= client andalso Tag =/= server
        andalso invalid(tag, "~p: the client-server manager needs tag => client | server", [Tag]),
    Strategy = maps:get(membership_strategy, Env, ?FULL_MEMBERSHIP),
    Strategy =:= ?FULL_MEMBERSHIP orelse is_strategy(Strategy) orelse
        invalid(membership_strategy, "~p is not a loadable module exporting the "
                "partisan_membership_strategy callbacks", [Strategy]),
    Strategy =:= ?FULL_MEMBERSHIP orelse M =:= partisan_pluggable_peer_service_manager orelse
        invalid(membership_strategy, "~p needs peer_service_manager => "
                "partisan_pluggable_peer_service_manager, not ~p", [Strategy, M]),
    Acc#{peer_service_manager => M, tag => Tag, membership_strategy => Strategy}.

is_strategy(Mod) ->
    is_atom(Mod) andalso code:ensure_loaded(Mod) =:= {module, Mod} andalso
        lists:all(fun({F, A}) -> erlang:function_exported(Mod, F, A) end,
                  [{init, 1}, {join, 3}, {leave, 2}, {periodic, 1}, {handle_message, 2}]).

cookie(Env, Acc) ->
    case maps:get(cookie, Env, erlang:get_cookie()) of
        nocookie when is_map_key(cookie, Env) ->
            invalid(cookie, "nocookie is not a cookie: set a non-empty atom, string or binary", []);
        nocookie -> Acc#{cookie => home_cookie()};
        C when is_atom(C) -> Acc#{cookie => atom_to_binary(C)};
        C when is_binary(C), C =/= <<>> -> Acc#{cookie => C};
        C when is_list(C), C =/= [] -> Acc#{cookie => unicode:characters_to_binary(C)};
        C -> invalid(cookie, "~p must be a non-empty atom, string or binary", [C])
    end.

broadcast_mods(Env, Acc) ->
    Mods = maps:get(broadcast_mods, Env, []),
    is_list(Mods) andalso lists:all(fun is_atom/1, Mods) orelse
        invalid(broadcast_mods, "~p must be a list of handler modules", [Mods]),
    Acc#{broadcast_mods => Mods}.

%% A VM that is not alive has no cookie (`nocookie'): take the one Distributed Erlang would,
%% ~/.erlang.cookie, so that two such VMs of one user join as alive ones would. Without that file,
%% a random cookie: the node starts, but no other node can join it until `cookie' is set.
home_cookie() ->
    File = case init:get_argument(home) of
        {ok, [[Home]]} -> filename:join(Home, ".erlang.cookie");
        _ -> ".erlang.cookie"
    end,
    case file:read_file(File) of
        {ok, Bin} when byte_size(Bin) > 0 ->
            case string:trim(Bin) of
                <<>> -> random_cookie(File);
                Cookie -> Cookie
            end;
        _ ->
            random_cookie(File)
    end.

random_cookie(File) ->
    logger:warning("partisan: this VM is not alive and has no cookie (no `cookie' key, no ~ts): "
                   "using a random one, so no other node can join this one; set the partisan "
                   "`cookie' key", [File]),
    binary:encode_hex(rand:bytes(16)).

%% How pids in outgoing messages are rewritten when the VM is not alive (see `nif_config/1').
remote_refs(Env, Acc) ->
    Format = maps:get(remote_ref_format, Env, improper_list),
    lists:member(Format, [improper_list, tuple, uri]) orelse
        invalid(remote_ref_format, "~p must be improper_list, tuple or uri", [Format]),
    Padding = maps:get(remote_ref_uri_padding, Env, false),
    is_boolean(Padding) orelse invalid(remote_ref_uri_padding, "~p must be a boolean", [Padding]),
    PidEncoding = maps:get(pid_encoding, Env, true),
    is_boolean(PidEncoding) orelse invalid(pid_encoding, "~p must be a boolean", [PidEncoding]),
    Acc#{remote_ref_format => Format, remote_ref_uri_padding => Padding,
         pid_encoding => PidEncoding}.

%% `peer_discovery' (Partisan v5's): checked by the agent that reads it.
peer_discovery(Env, Acc) ->
    case partisan_peer_discovery_agent:normalise_config(maps:get(peer_discovery, Env, #{})) of
        {ok, Opts} -> Acc#{peer_discovery => Opts};
        {error, Why} -> invalid(peer_discovery, "~ts", [Why])
    end.

%% How the OTP layer tells that a node it is not linked with is gone (see partisan_monitor).
monitor_probe(Env, Acc) ->
    Interval = maps:get(monitor_probe_interval, Env, 1000),
    Timeout = maps:get(monitor_probe_timeout, Env, 3000),
    (is_integer(Interval) andalso Interval > 0) orelse
        invalid(monitor_probe_interval, "~p must be a positive integer (milliseconds)", [Interval]),
    (is_integer(Timeout) andalso Timeout >= Interval) orelse
        invalid(monitor_probe_timeout, "~p must be an integer (milliseconds) of at least "
                "monitor_probe_interval (~p)", [Timeout, Interval]),
    Acc#{monitor_probe_interval => Interval, monitor_probe_timeout => Timeout}.

%% The data plane's keys: what the user set, checked and completed by the data plane.
data_plane(Env, Acc) ->
    ok = partisan_nif:load(),
    Given = maps:with(partisan_nif:config_keys(), Env),
    case partisan_nif:check_config(maps:merge(Given, data_plane_context(Acc))) of
        {ok, Effective} ->
            maps:merge(Acc, Effective);
        {error, {invalid_config, Key, Why}} ->
            case maps:find(Key, Env) of
                {ok, Value} -> invalid(Key, "~p: ~ts", [Value, Why]);
                error -> invalid(Key, "~ts", [Why])
            end
    end.

%% What the data plane reads beyond its keys: decided here.
data_plane_context(C) ->
    (maps:with([name, cookie, tag, channels], C))#{
        overlay => overlay(maps:get(peer_service_manager, C),
                           maps:get(membership_strategy, C, ?FULL_MEMBERSHIP)),
        schedulers_online => erlang:system_info(schedulers_online)}.

%% @doc The map `partisan_nif:start/1' takes, from the cached configuration.
-spec nif_config() -> map().
nif_config() ->
    Keys = partisan_nif:config_keys() ++ [name, cookie, tag, channels, peer_service_manager,
                                          membership_strategy, pid_encoding, remote_ref_format,
                                          remote_ref_uri_padding],
    nif_config(maps:from_list([{K, V} || K <- Keys, (V = get(K, '$undefined')) =/= '$undefined'])).

%% @doc The map `partisan_nif:start/1' takes, from a normalised config: the effective values of
%% the data plane's keys, unchanged, and what this side decided.
-spec nif_config(map()) -> map().
nif_config(C) ->
    maps:merge(data_plane_context(C),
               (maps:with(partisan_nif:config_keys(), C))#{
                   vm_node => erlang:node(),
                   %% Pids name their node only when the VM is alive: otherwise pids of this VM
                   %% in outgoing messages become remote references of this partisan node.
                   pid_rewrite => maps:get(pid_encoding, C, true) andalso erlang:node() =:= nonode@nohost,
                   remote_ref_format => maps:get(remote_ref_format, C, improper_list),
                   remote_ref_uri_padding => maps:get(remote_ref_uri_padding, C, false),
                   creation => creation(),
                   incarnation => erlang:system_time(microsecond)}).

overlay(partisan_pluggable_peer_service_manager, ?FULL_MEMBERSHIP) -> full_mesh;
overlay(partisan_pluggable_peer_service_manager, _Erlang) -> external;
overlay(partisan_client_server_peer_service_manager, _) -> client_server;
overlay(partisan_static_peer_service_manager, _) -> static;
overlay(partisan_hyparview_peer_service_manager, _) -> hyparview.

%% The VM's creation as stored in its pids (0 when not alive).
creation() ->
    case term_to_binary(self()) of
        <<131, 88, 119, Len, _:Len/binary, _Id:32, _Serial:32, Creation:32>> -> Creation;
        <<131, 88, 100, Len:16, _:Len/binary, _Id:32, _Serial:32, Creation:32>> -> Creation;
        _ -> 0
    end.
