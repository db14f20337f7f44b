-module(partisan_config_tests).
-include_lib("eunit/include/eunit.hrl").

%% A Partisan v5 configuration with every key (also the CT suite's sys.config).
-export([v5_env/0]).

base() -> #{name => 'n@127.0.0.1', cookie => <<"c">>}.

norm(Extra) -> partisan_config:normalise(maps:merge(base(), Extra)).

defaults_test() ->
    {ok, C} = norm(#{}),
    ?assertEqual(#{undefined => #{parallelism => 1, monotonic => false},
                   partisan_membership => #{parallelism => 1, monotonic => false}},
                 maps:get(channels, C)),
    ?assertEqual([#{ip => {127, 0, 0, 1}, port => 0}], maps:get(listen_addrs, C)),
    ?assertEqual(1000, maps:get(connection_interval, C)),
    ?assertEqual(partisan_pluggable_peer_service_manager, maps:get(peer_service_manager, C)),
    ?assertEqual(trusted, maps:get(decode, C)).

channel_list_forms_coerce_to_map_test() ->
    {ok, C} = norm(#{parallelism => 3, channels => [gossip, {monotonic, state}, {rpc, [{parallelism, 2}]}]}),
    Ch = maps:get(channels, C),
    ?assertEqual(#{parallelism => 3, monotonic => false}, maps:get(gossip, Ch)),
    ?assertEqual(#{parallelism => 3, monotonic => true}, maps:get(state, Ch)),
    ?assertEqual(#{parallelism => 2, monotonic => false}, maps:get(rpc, Ch)),
    ?assertEqual(#{parallelism => 3, monotonic => false}, maps:get(undefined, Ch)).

old_key_names_test() ->
    {ok, C} = norm(#{peer_ip => {127, 0, 0, 2}, peer_port => 9090}),
    ?assertEqual([#{ip => {127, 0, 0, 2}, port => 9090}], maps:get(listen_addrs, C)),
    {ok, C2} = norm(#{listen_addrs => [{"::1", 7000}]}),
    ?assertEqual([#{ip => {0, 0, 0, 0, 0, 0, 0, 1}, port => 7000}], maps:get(listen_addrs, C2)).

client_server_needs_a_tag_test() ->
    M = partisan_client_server_peer_service_manager,
    ?assertMatch({error, {invalid_config, tag, _}}, norm(#{peer_service_manager => M})),
    {ok, C} = norm(#{peer_service_manager => M, tag => client}),
    ?assertMatch(#{overlay := client_server, tag := client}, partisan_config:nif_config(C)),
    {ok, S} = norm(#{peer_service_manager => partisan_static_peer_service_manager}),
    ?assertMatch(#{overlay := static}, partisan_config:nif_config(S)).

hyparview_defaults_and_overrides_test() ->
    {ok, C} = norm(#{peer_service_manager => partisan_hyparview_peer_service_manager,
                     hyparview => #{active_max_size => 5, shuffle_interval => 2000}}),
    #{overlay := hyparview, hyparview := HV} = partisan_config:nif_config(C),
    ?assertMatch(#{active_max_size := 5, active_min_size := 3, shuffle_interval := 2000,
                   passive_max_size := 30, random_promotion := true}, HV).

erlang_membership_strategy_test() ->
    ?assertMatch({error, {invalid_config, membership_strategy, _}}, norm(#{membership_strategy => lists})),
    ?assertMatch({error, {invalid_config, membership_strategy, _}},
                 norm(#{membership_strategy => no_such_module_xyz})),
    {ok, C} = norm(#{membership_strategy => partisan_full_membership_strategy}),
    ?assertMatch(#{overlay := full_mesh}, partisan_config:nif_config(C)).

periodic_disabled_test() ->
    {ok, C} = norm(#{periodic_enabled => false}),
    ?assertEqual(0, maps:get(periodic_interval, C)).

bad_values_name_the_key_test_() ->
    Bad = [{channels, #{x => #{parallelism => 0}}},
           {channels, [{1, 2, 3}]},
           {channels, #{x => #{monotonic => maybe}}},
           {channels, not_a_channel_spec},
           {parallelism, 0},
           {listen_addrs, [#{ip => nope, port => 1}]},
           {listen_addrs, [#{ip => {127, 0, 0, 1}, port => 70000}]},
           {connection_interval, -1},
           {max_frame_size, 10},
           {decode, sometimes},
           {cookie, <<>>},
           {name, 'no_host'},
           {peer_service_manager, partisan_unknown_peer_service_manager},
           {hyparview, #{active_min_size => 7}},
           {hyparview, #{active_max_size => 0}},
           {hyparview, #{passive_rwl => 9}},
           {hyparview, #{random_promotion => 1}},
           {hyparview, #{bogus => 1}},
           {hyparview, not_a_map},
           {listen_port, 70000},
           {io_threads, 0},
           {read_spin, 1001},
           {read_spin, -1},
           {listen_ip, not_an_ip},
           {tls, yes},
           {tls_server_options, [{bogus, 1}]},
           {tls_server_options, [{verify, maybe}]},
           {tls_client_options, [{versions, ['tlsv1.0']}]},
           {tls_client_options, [{server_name_indication, ""}]},
           {tls_client_options, not_a_list},
           {channels, #{data => #{compression => 10}}},
           {channels, #{data => #{compression => fast}}},
           {handshake_timeout, 0},
           {max_pending_handshakes, 0},
           {max_pending_handshakes_per_addr, -1},
           {stop_flush_timeout, 60001},
           {retransmit_interval, 0},
           {max_unacked_bytes, 10},
           {connection_ping, #{timeout => 0}},
           {connection_ping, #{max_attempts => 0}},
           {connection_ping, #{enabled => 1}},
           {connection_ping, #{bogus => 1}},
           {connection_ping, 1000},
           {hyparview, [not_a_pair]},
           {causal_labels, [<<"l">>]},
           {causal_labels, l},
           {causal_max_buffered, 0},
           {causal_max_wait, -1},
           {causal_max_wait, soon},
           {ingress_delay, -1},
           {egress_delay, 60001},
           {egress_delay, soon},
           {remote_ref_as_uri, maybe},
           {hyparview, #{shuffle_interval => 0}},
           {hyparview, #{random_promotion_interval => 0}},
           {lazy_tick_period, 0},
           {broadcast, yes},
           {periodic_enabled, 1},
           {name, nonode@nohost},
           {cookie, nocookie},
           {remote_ref_format, binary},
           {remote_ref_uri_padding, yes},
           {pid_encoding, 1}],
    [?_assertMatch({error, {invalid_config, Key, [_ | _]}}, norm(#{Key => V})) || {Key, V} <- Bad].

nif_config_has_what_the_nif_reads_test() ->
    {ok, C} = norm(#{channels => #{data => #{parallelism => 2, compression => true}}}),
    N = partisan_config:nif_config(C),
    ?assertEqual(#{parallelism => 2, monotonic => false, compression => 1},
                 maps:get(data, maps:get(channels, N))),
    [?assert(maps:is_key(K, N)) || K <- [name, listen_addrs, cookie, vm_node, creation, incarnation,
                                         max_frame_size, max_queue_bytes, decode, connect_timeout, io_threads,
                                         read_spin]].

%% `tls => true' without certificates, or with files that cannot be read, stops the start naming
%% the key and the file; a security key is never ignored.
tls_without_certificates_refuses_to_start_test() ->
    {error, {invalid_config, tls_server_options, Why}} = norm(#{tls => true}),
    ?assertNotEqual(nomatch, string:find(Why, "certfile")),
    Missing = [{certfile, "/nonexistent/node.pem"}, {keyfile, "/nonexistent/node.key"},
               {cacertfile, "/nonexistent/ca.pem"}],
    {error, {invalid_config, tls_server_options, Why2}} =
        norm(#{tls => true, tls_server_options => Missing, tls_client_options => Missing}),
    ?assertNotEqual(nomatch, string:find(Why2, "/nonexistent/node.pem")),
    ?assertMatch({ok, #{tls := false}}, norm(#{tls => false})).

%% TLS options without `tls => true', and v5 keys not implemented: the node starts, and one
%% warning names them.
not_implemented_keys_start_with_a_warning_test() ->
    Env = #{tls_server_options => [{certfile, "c.pem"}], connect_disterl => true,
            binary_padding => true, hyparview => #{xbot_enabled => true}},
    ?assertMatch({ok, _}, norm(Env)),
    [V5, Tls] = partisan_config:warnings(Env),
    [?assertNotEqual(nomatch, string:find(V5, K)) || K <- ["connect_disterl", "binary_padding",
                                                          "xbot_enabled"]],
    ?assertNotEqual(nomatch, string:find(Tls, "tls_server_options")),
    ?assertEqual([], partisan_config:warnings(#{hyparview => #{xbot_enabled => false}})),
    ?assertEqual([], partisan_config:warnings(#{})).

hardening_defaults_reach_the_nif_test() ->
    {ok, C} = norm(#{}),
    ?assertMatch(#{handshake_timeout := 5000, max_pending_handshakes := 256,
                   max_pending_handshakes_per_addr := 64, stop_flush_timeout := 5000},
                 partisan_config:nif_config(C)).

%% EUnit runs in a VM that is not alive (rebar3's), as `mix test' or `rebar3 shell' of a project
%% depending on partisan do: partisan starts there with a generated name, as in Partisan v5.
not_alive_vm_gets_a_generated_name_test() ->
    {ok, #{name := Name}} = partisan_config:normalise(#{cookie => <<"c">>}),
    case erlang:node() of
        nonode@nohost ->
            ?assertMatch(["partisan_" ++ [_ | _], [_ | _]], string:split(atom_to_list(Name), "@")),
            {ok, #{name := Other}} = partisan_config:normalise(#{cookie => <<"c">>}),
            ?assertNotEqual(Name, Other);
        Node ->
            ?assertEqual(Node, Name)
    end.

not_alive_vm_without_cookie_key_still_has_a_cookie_test() ->
    {ok, #{cookie := Cookie}} = partisan_config:normalise(#{name => 'n@127.0.0.1'}),
    ?assert(is_binary(Cookie) andalso byte_size(Cookie) > 0).

pids_are_rewritten_only_when_the_vm_is_not_alive_test() ->
    {ok, C} = norm(#{}),
    N = partisan_config:nif_config(C),
    ?assertEqual(erlang:node() =:= nonode@nohost, maps:get(pid_rewrite, N)),
    ?assertEqual(improper_list, maps:get(remote_ref_format, N)),
    ?assertEqual(false, maps:get(remote_ref_uri_padding, N)),
    {ok, Off} = norm(#{pid_encoding => false, remote_ref_format => uri, remote_ref_uri_padding => true}),
    NOff = partisan_config:nif_config(Off),
    ?assertEqual(false, maps:get(pid_rewrite, NOff)),
    ?assertEqual(uri, maps:get(remote_ref_format, NOff)),
    ?assertEqual(true, maps:get(remote_ref_uri_padding, NOff)).

%% Passed the Erlang checks and then failed the start with an error of another shape: the data
%% plane's own checks run when the configuration is read.
a_zero_shuffle_interval_is_an_invalid_config_test() ->
    HV = partisan_hyparview_peer_service_manager,
    ?assertMatch({error, {invalid_config, hyparview, [_ | _]}},
                 norm(#{peer_service_manager => HV, hyparview => #{shuffle_interval => 0}})),
    {error, {invalid_config, hyparview, Why}} =
        norm(#{peer_service_manager => HV, hyparview => #{shuffle_interval => 0}}),
    ?assertNotEqual(nomatch, string:find(Why, "shuffle_interval")).

%% Random configurations from values on both sides of every bound: whatever is accepted reaches
%% the data plane unchanged (the values the Erlang side caches are the ones the data plane
%% reads back, and a key set in its canonical form keeps its value), a sample of them starts
%% the data plane, which then reports the same values; whatever is refused names a key that
%% was set.
accepted_values_reach_the_data_plane_unchanged_test_() ->
    {timeout, 120, fun accepted_values_reach_the_data_plane_unchanged/0}.

accepted_values_reach_the_data_plane_unchanged() ->
    rand:seed(exsss, {12, 13, 14}),
    Pools = #{parallelism => [1, 4, 256, 0, 257],
              channels => [#{data => #{parallelism => 2}}, [gossip, {monotonic, state}],
                           #{d => #{parallelism => 300}}, #{d => #{monotonic => 1}}],
              connection_interval => [0, 100, 1000, -1],
              connection_jitter => [0, 5, -5],
              periodic_enabled => [true, false, maybe],
              periodic_interval => [0, 500, -1],
              listen_addrs => [[#{ip => {127, 0, 0, 1}, port => 0}], [{"127.0.0.1", 0}], [],
                               [#{ip => {1, 2, 3}, port => 1}]],
              max_frame_size => [1024, 1 bsl 20, 10],
              max_queue_bytes => [1024, 1 bsl 26, 5],
              io_threads => [1, 2, 0, 65],
              read_spin => [0, 100, 1000, 1001],
              connect_timeout => [0, 500, -1],
              handshake_timeout => [100, 60000, 99],
              max_pending_handshakes => [1, 256, 0],
              max_pending_handshakes_per_addr => [1, 64, 65537],
              stop_flush_timeout => [0, 100, 60001],
              retransmit_interval => [1, 1000],
              max_unacked_bytes => [1024, 1 bsl 26],
              connection_ping => [#{enabled => true, idle_timeout => 20000, timeout => 10000,
                                    max_attempts => 5},
                                  #{enabled => false, idle_timeout => 1, timeout => 1,
                                    max_attempts => 1}],
              hyparview => [#{}, #{active_max_size => 5}, #{shuffle_interval => 0},
                            #{active_min_size => 9}],
              broadcast => [true, false, 1],
              lazy_tick_period => [1, 1000, 0],
              exchange_tick_period => [1, 10000, 0],
              decode => [safe, trusted, sometimes],
              peer_service_manager => [partisan_pluggable_peer_service_manager,
                                       partisan_hyparview_peer_service_manager,
                                       partisan_static_peer_service_manager]},
    %% Keys whose canonical form is the form given here: their value must come back as set.
    Canonical = [parallelism, connection_interval, connection_jitter, max_frame_size,
                 max_queue_bytes, io_threads, read_spin, connect_timeout, handshake_timeout,
                 max_pending_handshakes, max_pending_handshakes_per_addr, stop_flush_timeout,
                 retransmit_interval, max_unacked_bytes, connection_ping,
                 broadcast, lazy_tick_period, exchange_tick_period, decode],
    Results = [check_random_config(Pools, Canonical, N) || N <- lists:seq(1, 300)],
    Started = length([ok || started <- Results]),
    Accepted = Started + length([ok || accepted <- Results]),
    %% Both outcomes are common: a test that only ever accepts or refuses proves little.
    ?assertMatch({true, _, _}, {Accepted >= 30 andalso Accepted =< 270, Accepted, Started}),
    ?assertMatch({true, _}, {Started >= 5, {Accepted, Started}}).

check_random_config(Pools, Canonical, N) ->
    Set = maps:from_list([{K, pick(Vs)} || {K, Vs} <- lists:sort(maps:to_list(Pools)),
                                           rand:uniform(4) =:= 1]),
    case norm(Set) of
        {ok, C} ->
            NifConfig = partisan_config:nif_config(C),
            {ok, Effective} = partisan_nif:check_config(NifConfig),
            ?assertEqual(maps:with(maps:keys(Effective), C), Effective),
            [?assertEqual({K, V}, {K, maps:get(K, Effective)})
             || {K, V} <- maps:to_list(maps:with(Canonical, Set))],
            case N rem 4 of
                0 ->
                    {ok, _Spec} = partisan_nif:start(NifConfig#{events => self()}),
                    Running = partisan_nif:config(),
                    {ok, _} = partisan_nif:stop(),
                    flush(),
                    ?assertEqual({ok, Effective}, Running),
                    started;
                _ ->
                    accepted
            end;
        {error, {invalid_config, Key, [_ | _]}} ->
            ?assert(is_map_key(Key, Set)),
            refused
    end.

pick(Values) -> lists:nth(rand:uniform(length(Values)), Values).

flush() ->
    receive _ -> flush() after 0 -> ok end.

%% @doc Every key of Partisan v5's configuration, each with a value v5 accepts; those this release
%% does not implement have a value that asks for something (so each is warned about).
v5_env() ->
    #{%% implemented
      broadcast => false, broadcast_mods => [], causal_labels => [a, b],
      channels => [data, {monotonic, state}], connection_interval => 500,
      connection_jitter => 100, egress_delay => 0, exchange_tick_period => 10000,
      hyparview => [{active_max_size, 6}, {arwl, 6}, {xbot_enabled, true}, {xbot_interval, 5000}],
      ingress_delay => 0, lazy_tick_period => 1000,
      listen_addrs => ["127.0.0.1:0", #{ip => <<"127.0.0.1">>, port => <<"0">>}],
      membership_strategy => partisan_full_membership_strategy, name => 'n@127.0.0.1',
      parallelism => 1,
      partisan_peer_service_manager => partisan_pluggable_peer_service_manager,
      peer_discovery => #{enabled => false}, peer_ip => {127, 0, 0, 1}, peer_port => 0,
      peer_service_manager => partisan_pluggable_peer_service_manager,
      periodic_enabled => true, periodic_interval => 10000, pid_encoding => true,
      remote_ref_as_uri => false, remote_ref_format => improper_list,
      remote_ref_uri_padding => false, tag => undefined, tls => false,
      tls_client_options => [], tls_server_options => [],
      %% accepted, not implemented
      binary_padding => true, binary_padding_term => <<"pad">>,
      broadcast_start_exchange_limit => 2, channel_fallback => false, connect_disterl => true,
      disable_fast_forward => true, disable_fast_receive => true, distance_enabled => true,
      exchange_selection => normal, fanout => 5, forward_options => [{channel, data}],
      gossip => false, membership_binary_compression => 6, membership_strategy_tracing => true,
      metadata => #{role => web}, nodestring => <<"n@127.0.0.1">>,
      orchestration_strategy => partisan_kubernetes_orchestration_strategy,
      random_seed => {1, 2, 3}, ref_encoding => true, register_pid_for_encoding => true,
      replaying => true, reservations => [server], shrinking => true, tracing => true,
      transmission_logging_mfa => {io, format, []}, tls_options => [{verify, verify_none}],
      xbot_interval => 5000, peer_host => "localhost", arwl => 5, prwl => 5,
      max_active_size => 6, min_active_size => 3, max_passive_size => 30,
      passive_view_shuffle_period => 10000, random_promotion => true,
      random_promotion_period => 5000, connection_ping => #{enabled => true},
      retransmit_interval => 1000}.

%% The sample covers v5_keys/0 exactly.
v5_env_has_every_v5_key_test() ->
    Top = lists:sort([K || {K, _} <- partisan_config:v5_keys(), is_atom(K)]),
    ?assertEqual(Top, lists:sort(maps:keys(v5_env()))).

%% All keys at once: the node's config is accepted, and one warning names exactly the keys not
%% implemented.
every_v5_key_accepted_with_one_warning_test() ->
    Env = v5_env(),
    ?assertMatch({ok, _}, partisan_config:normalise(Env)),
    [Warning] = partisan_config:warnings(Env),
    Ignored = [K || {K, {ignored, _}} <- partisan_config:v5_keys()],
    [?assertNotEqual(nomatch, string:find(Warning, io_lib:format("~p", [K]))) || K <- Ignored],
    [?assertEqual(nomatch, string:find(Warning, io_lib:format("~p,", [K])))
     || {K, implemented} <- partisan_config:v5_keys(), K =/= hyparview].

%% Each key alone: accepted; a key not implemented warns with a value that asks for something,
%% and not with its inert value; an implemented key never warns.
each_v5_key_accepted_test_() ->
    HV = maps:from_list(maps:get(hyparview, v5_env())),
    Sample = fun({hyparview, K}) -> #{hyparview => #{K => maps:get(K, HV)}};
                (K) -> #{K => maps:get(K, v5_env())}
             end,
    Inert = fun({hyparview, K}, I) -> #{hyparview => #{K => I}};
               (K, I) -> #{K => I}
            end,
    lists:append(
      [[?_assertMatch({ok, _}, norm(Sample(K))),
        %% (the sample `hyparview' holds X-BOT's keys, which are not implemented)
        ?_assertEqual(case {K, Status} of {hyparview, _} -> 1; {_, implemented} -> 0; _ -> 1 end,
                      length(partisan_config:warnings(Sample(K))))]
       ++ [?_assertEqual([], partisan_config:warnings(Inert(K, I))) || {ignored, I} <- [Status], I =/= any]
       || {K, Status} <- partisan_config:v5_keys(), K =/= name]).

hyparview_as_proplist_with_v5_names_test() ->
    {ok, C} = norm(#{hyparview => [{arwl, 7}, {max_active_size, 5}, {random_promotion_period, 700},
                                   {xbot_interval, 100}]}),
    ?assertMatch(#{active_rwl := 7, active_max_size := 5, random_promotion_interval := 700},
                 maps:get(hyparview, C)),
    ?assertNot(maps:is_key(xbot_interval, maps:get(hyparview, C))).

v5_spellings_test() ->
    {ok, C} = norm(#{partisan_peer_service_manager => partisan_static_peer_service_manager,
                     remote_ref_as_uri => true}),
    ?assertEqual(partisan_static_peer_service_manager, maps:get(peer_service_manager, C)),
    ?assertEqual(uri, maps:get(remote_ref_format, C)),
    ?assertMatch({error, {invalid_config, peer_service_manager, _}},
                 norm(#{partisan_peer_service_manager => no_such_manager})),
    {ok, C2} = norm(#{remote_ref_as_uri => true, remote_ref_format => tuple}),
    ?assertEqual(tuple, maps:get(remote_ref_format, C2)).

causal_and_delays_test() ->
    {ok, C} = norm(#{causal_labels => [b, a, b], ingress_delay => 10}),
    ?assertMatch(#{causal_labels := [a, b], causal_max_buffered := 10000, causal_max_wait := infinity,
                   ingress_delay := 10, egress_delay := 0}, C),
    ?assertMatch({ok, #{causal_max_wait := 0}}, norm(#{causal_max_wait => 0})).

%% v5's forms of listen addresses, equivalent ones deduplicated.
v5_listen_addr_forms_test() ->
    Forms = ["127.0.0.1:12345", <<"127.0.0.1:12345">>, {"127.0.0.1", "12345"},
             {{127, 0, 0, 1}, 12345}, #{ip => "127.0.0.1", port => "12345"},
             #{ip => <<"127.0.0.1">>, port => <<"12345">>}, #{ip => {127, 0, 0, 1}, port => 12345}],
    {ok, C} = norm(#{listen_addrs => Forms}),
    ?assertEqual([#{ip => {127, 0, 0, 1}, port => 12345}], maps:get(listen_addrs, C)),
    {ok, C2} = norm(#{listen_addrs => ["127.0.0.2", "[::1]:7000"], peer_port => 9000}),
    ?assertEqual([#{ip => {127, 0, 0, 2}, port => 9000}, #{ip => {0, 0, 0, 0, 0, 0, 0, 1}, port => 7000}],
                 maps:get(listen_addrs, C2)),
    ?assertMatch({error, {invalid_config, listen_addrs, _}}, norm(#{listen_addrs => ["nohost:x"]})),
    ?assertMatch({error, {invalid_config, listen_addrs, _}}, norm(#{listen_addrs => [#{ip => "1.2.3.4", port => "x"}]})).
