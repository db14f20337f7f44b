-module(partisan_config_tests).
-include_lib("eunit/include/eunit.hrl").

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
    ?assertMatch(#{topology := client_server, tag := client}, partisan_config:nif_config(C)),
    {ok, S} = norm(#{peer_service_manager => partisan_static_peer_service_manager}),
    ?assertMatch(#{topology := static}, partisan_config:nif_config(S)).

hyparview_defaults_and_overrides_test() ->
    {ok, C} = norm(#{peer_service_manager => partisan_hyparview_peer_service_manager,
                     hyparview => #{active_max_size => 5, shuffle_interval => 2000}}),
    #{topology := hyparview, hyparview := HV} = partisan_config:nif_config(C),
    ?assertMatch(#{active_max_size := 5, active_min_size := 3, shuffle_interval := 2000,
                   passive_max_size := 30, random_promotion := true}, HV).

erlang_membership_strategy_test() ->
    ?assertMatch({error, {invalid_config, membership_strategy, _}}, norm(#{membership_strategy => lists})),
    ?assertMatch({error, {invalid_config, membership_strategy, _}},
                 norm(#{membership_strategy => no_such_module_xyz})),
    {ok, C} = norm(#{membership_strategy => partisan_full_membership_strategy}),
    ?assertMatch(#{topology := full_mesh}, partisan_config:nif_config(C)).

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
           {listen_ip, not_an_ip},
           {tls, true},
           {tls, yes},
           {handshake_timeout, 0},
           {max_pending_handshakes, 0},
           {max_pending_handshakes_per_addr, -1},
           {stop_flush_timeout, 60001},
           {hyparview, #{xbot_enabled => maybe}},
           {name, nonode@nohost},
           {cookie, nocookie},
           {remote_ref_format, binary},
           {remote_ref_uri_padding, yes},
           {pid_encoding, 1}],
    [?_assertMatch({error, {invalid_config, Key, [_ | _]}}, norm(#{Key => V})) || {Key, V} <- Bad].

nif_config_has_what_the_nif_reads_test() ->
    {ok, C} = norm(#{channels => #{data => #{parallelism => 2, compression => true}}}),
    N = partisan_config:nif_config(C),
    ?assertEqual(#{parallelism => 2, monotonic => false}, maps:get(data, maps:get(channels, N))),
    [?assert(maps:is_key(K, N)) || K <- [name, listen_addrs, cookie, vm_node, creation, incarnation,
                                         max_frame_size, max_queue_bytes, decode, connect_timeout, io_threads]].

%% TLS is not implemented: asking for it refuses to start, naming the key.
tls_true_refuses_to_start_test() ->
    {error, {invalid_config, tls, Why}} = norm(#{tls => true}),
    ?assertNotEqual(nomatch, string:find(Why, "not implemented")),
    ?assertMatch({ok, _}, norm(#{tls => false})).

%% TLS options without `tls => true', and v5 keys not implemented: the node starts, and one
%% warning names them.
not_implemented_keys_start_with_a_warning_test() ->
    Env = #{tls_server_options => [{certfile, "c.pem"}], connection_ping => #{},
            ingress_delay => 5, hyparview => #{xbot_enabled => true}},
    ?assertMatch({ok, _}, norm(Env)),
    [V5, Tls] = partisan_config:warnings(Env),
    [?assertNotEqual(nomatch, string:find(V5, K)) || K <- ["connection_ping", "ingress_delay",
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
