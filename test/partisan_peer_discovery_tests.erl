%% The peer discovery configuration and backends, without a cluster: `peer_discovery' is
%% validated with reasons that say what to fix; the list backend parses v5's address forms; the
%% DNS backend reads A, SRV and A + PTR records from a DNS server on loopback
%% (`partisan_test_dns', real DNS over UDP).
-module(partisan_peer_discovery_tests).

-include_lib("eunit/include/eunit.hrl").

-define(AGENT, partisan_peer_discovery_agent).

config_defaults_and_forms_test() ->
    {ok, Off} = ?AGENT:normalise_config(#{}),
    ?assertMatch(#{enabled := false, initial_delay := 10000, polling_interval := 60000,
                   timeout := 5000, retry_interval := 1000, max_retry_interval := 30000}, Off),
    {ok, On} = ?AGENT:normalise_config([{enabled, true}, {type, partisan_peer_discovery_list},
                                        {config, #{addresses => []}}, {initial_delay, 0}]),
    ?assertMatch(#{enabled := true, type := partisan_peer_discovery_list, initial_delay := 0}, On).

config_errors_say_what_to_fix_test_() ->
    Bad = [{#{enabled => true}, "needs type"},
           {#{enabled => true, type => no_such_module}, "not a loadable module"},
           {#{enabled => yes}, "must be a boolean"},
           {#{polling_interval => 10}, "at least 100"},
           {#{retry_interval => 500, max_retry_interval => 100}, "must not be less than"},
           {#{config => [{a, 1}]}, "must be a map"},
           {#{pollling_interval => 1000}, "unknown keys [pollling_interval]"},
           {[not_a_pair], "proplist"}],
    [?_assertNotEqual({Why, nomatch}, {Why, string:find(Why, Expect)})
     || {Config, Expect} <- Bad, {error, Why} <- [?AGENT:normalise_config(Config)]]
    ++ [?_assertEqual(length(Bad), length([E || {C, _} <- Bad,
                                                {error, _} = E <- [?AGENT:normalise_config(C)]]))].

partisan_config_refuses_a_bad_peer_discovery_test() ->
    ?assertMatch({error, {invalid_config, peer_discovery, "enabled => true needs type" ++ _}},
                 partisan_config:normalise(#{peer_discovery => #{enabled => true}})).

list_backend_test_() ->
    {setup, fun() -> set_env(#{name => 'me@127.0.0.1', listen_port => 9100, channels => #{}}) end,
     fun restore_env/1,
     fun(_) ->
             {ok, S} = partisan_peer_discovery_list:init(
                         #{addresses => [<<"a@127.0.0.1:9001">>, "b@127.0.0.1", {'c@127.0.0.1', 9003},
                                         {"d@localhost", 9004}, <<"me@127.0.0.1:9100">>,
                                         "e@no such host:9005"]}),
             {ok, Specs, S} = partisan_peer_discovery_list:lookup(S, 1000),
             Addrs = [{N, IP, P} || #{name := N, listen_addrs := [#{ip := IP, port := P}]} <- Specs],
             [?_assertEqual([{'a@127.0.0.1', {127, 0, 0, 1}, 9001},
                             {'b@127.0.0.1', {127, 0, 0, 1}, 9100},   % this node's port
                             {'c@127.0.0.1', {127, 0, 0, 1}, 9003}],
                            lists:sublist(Addrs, 3)),
              ?_assertMatch([{'d@localhost', _, 9004}], lists:sublist(Addrs, 4, 1)),
              %% itself skipped, an unresolvable host skipped (until it resolves)
              ?_assertEqual(4, length(Specs)),
              ?_assertMatch({error, "address \"nobody\" is not" ++ _},
                            partisan_peer_discovery_list:init(#{addresses => ["nobody"]})),
              ?_assertMatch({error, "address <<\"a@h:99999\">> is not" ++ _},
                            partisan_peer_discovery_list:init(#{addresses => [<<"a@h:99999">>]})),
              ?_assertMatch({error, "the list backend's config" ++ _},
                            partisan_peer_discovery_list:init(#{nodes => []}))]
     end}.

list_backend_without_a_port_test() ->
    Saved = set_env(#{listen_port => 0}),
    try
        ?assertMatch({error, "address \"b@127.0.0.1\" has no port" ++ _},
                     partisan_peer_discovery_list:init(#{addresses => ["b@127.0.0.1"]}))
    after
        restore_env(Saved)
    end.

dns_backend_test_() ->
    {setup,
     fun() ->
             Saved = set_env(#{listen_port => 9200, channels => #{}}),
             {ok, Server, Port} = partisan_test_dns:start(
                                    #{{"nodes.partisan.test", a} => [{127, 0, 0, 2}, {127, 0, 0, 3}],
                                      {"_partisan._tcp.partisan.test", srv} =>
                                          [{0, 0, 9001, "s1.partisan.test"}, {0, 0, 9002, "127.0.0.1"}],
                                      {"s1.partisan.test", a} => [{127, 0, 0, 1}, {127, 0, 0, 9}],
                                      {"2.0.0.127.in-addr.arpa", ptr} => ["f2.partisan.test"],
                                      {"3.0.0.127.in-addr.arpa", ptr} => ["f3.partisan.test"]}),
             {Saved, Server, Port}
     end,
     fun({Saved, Server, _}) -> partisan_test_dns:stop(Server), restore_env(Saved) end,
     fun({_, Server, Port}) ->
             NS = [{{127, 0, 0, 1}, Port}],
             Lookup = fun(Type, Name) ->
                              {ok, S} = partisan_peer_discovery_dns:init(
                                          #{record_type => Type, name => Name, nodename => <<"app">>,
                                            nameservers => NS}),
                              case partisan_peer_discovery_dns:lookup(S, 2000) of
                                  {ok, Specs, S} ->
                                      lists:sort([{N, [{IP, P} || #{ip := IP, port := P} <- As]}
                                                  || #{name := N, listen_addrs := As} <- Specs]);
                                  {error, Reason, S} ->
                                      {error, Reason}
                              end
                      end,
             [?_assertEqual([{'app@127.0.0.2', [{{127, 0, 0, 2}, 9200}]},
                             {'app@127.0.0.3', [{{127, 0, 0, 3}, 9200}]}],
                            Lookup(a, "nodes.partisan.test")),
              ?_assertEqual([{'app@127.0.0.1', [{{127, 0, 0, 1}, 9002}]},
                             {'app@s1.partisan.test', [{{127, 0, 0, 1}, 9001}, {{127, 0, 0, 9}, 9001}]}],
                            Lookup(srv, <<"_partisan._tcp.partisan.test">>)),
              ?_assertEqual([{'app@f2.partisan.test', [{{127, 0, 0, 2}, 9200}]},
                             {'app@f3.partisan.test', [{{127, 0, 0, 3}, 9200}]}],
                            Lookup(fqdns, "nodes.partisan.test")),
              ?_assertEqual({error, {dns, "missing.partisan.test", nxdomain}},
                            Lookup(a, "missing.partisan.test")),
              %% every answer came over the wire from the test server
              ?_assert(lists:member({"_partisan._tcp.partisan.test", srv}, partisan_test_dns:queries(Server))),
              ?_assertMatch({error, "record_type aaaa must be" ++ _},
                            partisan_peer_discovery_dns:init(#{record_type => aaaa, name => "x",
                                                               nodename => "y"})),
              ?_assertMatch({error, "the DNS backend needs name" ++ _},
                            partisan_peer_discovery_dns:init(#{record_type => a, nodename => "y"})),
              ?_assertMatch({error, "nameservers [localhost] must be" ++ _},
                            partisan_peer_discovery_dns:init(#{record_type => a, name => "x",
                                                               nodename => "y",
                                                               nameservers => [localhost]}))]
     end}.

dns_a_records_need_a_fixed_port_test() ->
    Saved = set_env(#{listen_port => 0}),
    try
        ?assertMatch({error, "record_type a gives addresses without ports" ++ _},
                     partisan_peer_discovery_dns:init(#{record_type => a, name => "x", nodename => "y"})),
        ?assertMatch({ok, _}, partisan_peer_discovery_dns:init(#{record_type => srv, name => "x",
                                                                 nodename => "y"}))
    after
        restore_env(Saved)
    end.

%% Sets partisan config keys (env and cache) and returns what to restore.
set_env(Map) ->
    Saved = [{K, application:get_env(partisan, K), persistent_term:get({partisan_config, K}, undefined)}
             || K <- maps:keys(Map)],
    maps:foreach(fun(K, V) -> ok = partisan_config:set(K, V) end, Map),
    Saved.

restore_env(Saved) ->
    lists:foreach(fun({K, Env, Cached}) ->
                          case Env of
                              {ok, V} -> application:set_env(partisan, K, V);
                              undefined -> application:unset_env(partisan, K)
                          end,
                          case Cached of
                              undefined -> persistent_term:erase({partisan_config, K});
                              C -> persistent_term:put({partisan_config, K}, C)
                          end
                  end, Saved).
