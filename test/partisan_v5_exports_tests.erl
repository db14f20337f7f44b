%% Partisan v5.0.3's exports of the modules the compatibility work covers (copied from the
%% project's exports sheet, partisan-v5-exports.md, which lives outside the repository), and the
%% pure parts of what was added for them.
-module(partisan_v5_exports_tests).
-include_lib("eunit/include/eunit.hrl").

-export([manager_api/0]).

%% v5's `partisan_pluggable_peer_service_manager' (36): every manager module has them.
manager_api() ->
    [{member, 1}, {add_interposition_fun, 2}, {add_post_interposition_fun, 2},
     {add_pre_interposition_fun, 2}, {cast_message, 2}, {cast_message, 3}, {cast_message, 4},
     {decode, 1}, {forward_message, 2}, {forward_message, 3}, {forward_message, 4},
     {get_interposition_funs, 0}, {get_local_state, 0}, {get_pre_interposition_funs, 0},
     {inject_partition, 2}, {join, 1}, {leave, 0}, {leave, 1}, {members, 0},
     {members_for_orchestration, 0}, {on_down, 2}, {on_down, 3}, {on_up, 2}, {on_up, 3},
     {partitions, 0}, {receive_message, 3}, {remove_interposition_fun, 1},
     {remove_post_interposition_fun, 1}, {remove_pre_interposition_fun, 1}, {reserve, 1},
     {resolve_partition, 1}, {send_message, 2}, {start_link, 0}, {supports_capability, 1},
     {sync_join, 1}, {update_members, 1}].

v5_exports() ->
    [{partisan_peer_service,
      [{add_sup_callback, 1}, {broadcast_members, 0}, {broadcast_members, 1},
       {cancel_exchanges, 1}, {connections, 0}, {decode, 1}, {exchanges, 0}, {exchanges, 1},
       {get_local_state, 0}, {inject_partition, 2}, {join, 1}, {leave, 0}, {leave, 1},
       {manager, 0}, {member, 1}, {members, 0}, {members_for_orchestration, 0}, {on_down, 2},
       {on_down, 3}, {on_up, 2}, {on_up, 3}, {partitions, 0}, {reserve, 1},
       {resolve_partition, 1}, {stop, 0}, {stop, 1}, {sync_join, 1}, {update_members, 1}]},
     {partisan_pluggable_peer_service_manager, manager_api()},
     {partisan_hyparview_peer_service_manager, manager_api()},
     {partisan_client_server_peer_service_manager, manager_api()},
     {partisan_static_peer_service_manager, manager_api()},
     {partisan_plumtree_broadcast,
      [{broadcast, 2}, {broadcast_channel, 1}, {broadcast_members, 0}, {broadcast_members, 1},
       {cancel_exchanges, 1}, {exchanges, 0}, {exchanges, 1}, {exchanges, 2}, {start_link, 0},
       {start_link, 5}, {update, 1}, {get_peers, 1}, {get_peers, 2}, {get_eager_peers, 1},
       {get_lazy_peers, 1}, {debug_get_peers, 2}, {debug_get_peers, 3}, {debug_get_peers, 4},
       {debug_get_tree, 2}, {debug_get_tree, 3}, {debug_get_tree, 4}]},
     {partisan_config,
      [{channel_opts, 1}, {channels, 0}, {default_channel, 0}, {default_channel_opts, 0},
       {get, 1}, {get, 2}, {get_with_opts, 2}, {get_with_opts, 3}, {init, 0},
       {listen_addrs, 0}, {parallelism, 0}, {seed, 0}, {seed, 1}, {set, 2}, {trace, 2}]},
     {partisan_erpc,
      [{call, 2}, {call, 3}, {call, 4}, {call, 5}, {cast, 2}, {cast, 4}, {send_request, 2},
       {send_request, 4}, {receive_response, 1}, {receive_response, 2}, {wait_response, 1},
       {wait_response, 2}, {check_response, 2}, {multicall, 2}, {multicall, 3},
       {multicall, 4}, {multicall, 5}, {multicast, 2}, {multicast, 4}, {execute_call, 4},
       {execute_call, 3}, {execute_cast, 3}, {is_arg_error, 4}, {trim_stack, 4},
       {call_result, 4}]},
     %% The backends: what maps onto the data plane (see their module docs for the rest).
     {partisan_acknowledgement_backend, [{outstanding, 0}]},
     {partisan_causality_backend,
      [{receive_message, 2}, {set_delivery_fun, 2}, {is_causal_message, 1}]}].

%% v5 exports deliberately left out: the data plane does their work (module docs, README).
left_out() ->
    [{partisan_acknowledgement_backend, [{start_link, 0}, {store, 2}, {ack, 1}]},
     {partisan_causality_backend, [{start_link, 1}, {emit, 4}, {reemit, 2}]}].

every_v5_export_is_exported_test_() ->
    [{atom_to_list(M), fun() ->
                               {module, M} = code:ensure_loaded(M),
                               Missing = [FA || {F, A} = FA <- Fs,
                                                not erlang:function_exported(M, F, A)],
                               ?assertEqual({M, []}, {M, Missing})
                       end} || {M, Fs} <- v5_exports()].

left_out_ones_stay_out_test() ->
    [?assertNot(erlang:function_exported(M, F, A)) || {M, Fs} <- left_out(), {F, A} <- Fs,
                                                     {module, M} =:= code:ensure_loaded(M)].

%% -- partisan_config ----------------------------------------------------------

with_config(Pairs, Fun) ->
    Keys = [{K, persistent_term:get({partisan_config, K}, '$none')} || {K, _} <- Pairs],
    [persistent_term:put({partisan_config, K}, V) || {K, V} <- Pairs],
    try Fun()
    after
        [case Old of
             '$none' -> persistent_term:erase({partisan_config, K});
             _ -> persistent_term:put({partisan_config, K}, Old)
         end || {K, Old} <- Keys]
    end.

channel_opts_test() ->
    Channels = #{undefined => #{parallelism => 2, monotonic => false},
                 gossip => #{parallelism => 1, monotonic => true}},
    with_config([{channels, Channels}],
                fun() ->
                        ?assertEqual(#{parallelism => 1, monotonic => true},
                                     partisan_config:channel_opts(gossip)),
                        ?assertEqual(#{parallelism => 2, monotonic => false},
                                     partisan_config:default_channel_opts()),
                        ?assertError(badarg, partisan_config:channel_opts(nope)),
                        ?assertError(badarg, partisan_config:channel_opts("gossip"))
                end).

get_with_opts_test() ->
    with_config([{connection_interval, 1234}],
                fun() ->
                        ?assertEqual(5, partisan_config:get_with_opts(connection_interval, #{connection_interval => 5})),
                        ?assertEqual(6, partisan_config:get_with_opts(connection_interval, [{connection_interval, 6}])),
                        ?assertEqual(1234, partisan_config:get_with_opts(connection_interval, #{})),
                        ?assertEqual(1234, partisan_config:get_with_opts(connection_interval, [])),
                        ?assertEqual(d, partisan_config:get_with_opts(no_such_key_here, [], d)),
                        ?assertEqual(7, partisan_config:get_with_opts(no_such_key_here, #{no_such_key_here => 7}, d)),
                        ?assertError({unknown_config, no_such_key_here},
                                     partisan_config:get_with_opts(no_such_key_here, #{}))
                end).

listen_addrs_when_not_running_test() ->
    Addrs = [#{ip => {127, 0, 0, 1}, port => 0}],
    with_config([{listen_addrs, Addrs}],
                fun() -> ?assertEqual(Addrs, partisan_config:listen_addrs()) end).

seed_test() ->
    _ = partisan_config:seed({1, 2, 3}),
    A = [rand:uniform(1000) || _ <- lists:seq(1, 5)],
    _ = partisan_config:seed({1, 2, 3}),
    ?assertEqual(A, [rand:uniform(1000) || _ <- lists:seq(1, 5)]),
    with_config([{random_seed, {4, 5, 6}}],
                fun() ->
                        _ = partisan_config:seed(),
                        B = [rand:uniform(1000) || _ <- lists:seq(1, 5)],
                        _ = partisan_config:seed({4, 5, 6}),
                        ?assertEqual(B, [rand:uniform(1000) || _ <- lists:seq(1, 5)])
                end),
    ?assertMatch(#{type := exsplus}, element(1, partisan_config:seed())).

trace_test() ->
    ?assertEqual(ok, partisan_config:trace("x ~p", [1])).

%% -- partisan_erpc: OTP 25's exported internals ------------------------------

erpc_internals_test() ->
    ?assertEqual({return, 3}, partisan_erpc:execute_call(erlang, length, [[a, b, c]])),
    ?assertError(badarg, partisan_erpc:execute_call(erlang, length, [x])),
    Ref = make_ref(),
    {_, MRef} = spawn_monitor(fun() -> partisan_erpc:execute_call(Ref, erlang, length, [[a]]) end),
    receive {'DOWN', MRef, process, _, Reason} -> ?assertEqual({Ref, return, 1}, Reason) end,
    {_, MRef2} = spawn_monitor(fun() -> partisan_erpc:execute_call(Ref, erlang, throw, [t]) end),
    receive {'DOWN', MRef2, process, _, Reason2} -> ?assertEqual({Ref, throw, t}, Reason2) end,
    ?assertEqual(1, partisan_erpc:call_result(down, make_ref(), Ref, {Ref, return, 1})),
    ?assertThrow(t, partisan_erpc:call_result(down, make_ref(), Ref, {Ref, throw, t})),
    ?assertExit({exception, r}, partisan_erpc:call_result(down, make_ref(), Ref, {Ref, exit, r})),
    ?assertError({erpc, noconnection}, partisan_erpc:call_result(down, make_ref(), Ref, noconnection)),
    ?assertExit({signal, killed}, partisan_erpc:call_result(down, make_ref(), Ref, killed)),
    ?assertNot(partisan_erpc:is_arg_error(badarg, erlang, length, [x])),
    Stack = [{erlang, length, [x], []}, {erpc, execute_call, 3, []}, {other, f, 0, []}],
    ?assertEqual([{erlang, length, [x], []}], partisan_erpc:trim_stack(Stack, erlang, length, [x])),
    ?assertEqual(3, partisan_erpc:execute_cast(erlang, length, [[a, b, c]])).

%% -- managers, peer service, plumtree (what needs no running node) -----------

manager_parts_test() ->
    ok = partisan_nif:load(),
    [begin
         ?assert(M:supports_capability(monitoring)),
         ?assertNot(M:supports_capability(anything_else)),
         ?assertEqual({error, no_available_slots}, M:reserve(tag)),
         ?assertMatch({error, {unknown_message, hello}}, M:receive_message(n@h, undefined, hello))
     end || M <- [partisan_pluggable_peer_service_manager, partisan_hyparview_peer_service_manager,
                  partisan_client_server_peer_service_manager, partisan_static_peer_service_manager]],
    Spec = #{name => 'a@127.0.0.1', listen_addrs => [#{ip => {127, 0, 0, 1}, port => 1}],
             channels => #{}},
    M = partisan_peer_service_manager,
    ?assertEqual([Spec], M:decode([Spec])),
    %% Names the data plane knows no spec for (it is not running here).
    ?assertEqual([#{name => 'b@h'}], M:decode(['b@h'])),
    ?assertEqual(['a@127.0.0.1', 'b@h'], partisan_peer_service:decode([Spec, 'b@h'])),
    ?assertEqual(['b@h', 'c@h'], partisan_peer_service:decode({ok, #{members => ['b@h', 'c@h'],
                                                                      connected => []}})),
    ?assertError(badarg, M:decode(not_a_state)),
    ?assertError(badarg, M:decode([42])),
    ?assertMatch({error, {bad_callback, _}}, partisan_peer_service:add_sup_callback(fun() -> ok end)),
    ?assertMatch({error, {bad_members, x}}, partisan_peer_service:update_members(x)),
    ?assertMatch({error, {bad_node_spec, _}}, partisan_peer_service:update_members([#{name => 1}])).

broadcast_channel_test() ->
    ?assertEqual(undefined, partisan_plumtree_broadcast:broadcast_channel(lists)),
    ?assertEqual(undefined, partisan_plumtree_broadcast:broadcast_channel(no_such_module_here)),
    ok = partisan_nif:load(),
    %% Not running: no tree.
    ?assertEqual({[], []}, partisan_plumtree_broadcast:get_peers(node())),
    ?assertEqual([], partisan_plumtree_broadcast:get_eager_peers(node())),
    ?assertEqual({[], [], #{metadata => #{}}},
                 partisan_plumtree_broadcast:get_peers(node(), [metadata, distance])),
    ?assertError(badarg, partisan_plumtree_broadcast:broadcast_members(0)).

outstanding_when_not_running_test() ->
    ?assertEqual({ok, 0}, partisan_acknowledgement_backend:outstanding()).

causal_receive_message_checks_the_label_test() ->
    Env = {'$partisan_causal', chat, {n, 1}, 1, #{}, dest, msg},
    ?assertEqual({error, {not_causal, other}}, partisan_causality_backend:receive_message(other, Env)),
    ?assertEqual({error, {not_causal, chat}}, partisan_causality_backend:receive_message(chat, hello)),
    ?assertEqual({error, not_started}, partisan_causality_backend:receive_message(chat, Env)),
    ?assertMatch({error, {bad_callback, _}}, partisan_causality_backend:set_delivery_fun(chat, fun() -> ok end)).
