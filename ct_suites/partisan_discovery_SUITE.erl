%% Peer discovery on real clusters: nodes started with the same `peer_discovery' config form one
%% cluster without any join call.
%%
%% - The list backend: three of four listed nodes, enabled with partisan_peer_discovery_agent:enable/0
%%   once a telemetry handler is attached, form a cluster; the fourth, down, is probed
%%   again and again with a growing wait (observed through the agent's telemetry events and their
%%   timestamps); started later without discovery of its own, it is joined by the others.
%% - The DNS backend with A records, one node per address (127.0.0.2, .3, .4, as one node per
%%   host): the records come from a DNS server on loopback speaking real DNS over UDP
%%   (`partisan_test_dns'); a node whose address is added to the zone later joins by itself.
%% - The DNS backend with SRV records: the port and the target host (resolved with an A record)
%%   come from DNS.
%%
%% The DNS nodes are named `disc@127.0.0.X' (`srv@sN.partisan.test'): one name per host, as DNS
%% discovery assumes. They run with `-dist_listen false' (alive, registered nowhere, so the same
%% name part can repeat) and are driven over standard_io with `peer:call/5'.
-module(partisan_discovery_SUITE).

-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1]).
-export([list_backend/1, dns_a_records/1, dns_srv_records/1]).

-define(TIMEOUT, 15000).
-define(DISCOVERY, #{enabled => true, initial_delay => 0, polling_interval => 500, timeout => 1000,
                     retry_interval => 100, max_retry_interval => 1600}).
-define(ENV, #{connection_interval => 100, connection_jitter => 50}).

all() ->
    [list_backend, dns_a_records, dns_srv_records].

init_per_suite(Config) ->
    case partisan_telemetry_ct:build(proplists:get_value(priv_dir, Config)) of
        {ok, Ebin} ->
            true = code:add_patha(Ebin),
            [{telemetry_ebin, Ebin} | Config];
        {skip, Why} ->
            [{telemetry_skip, Why} | Config]
    end.

end_per_suite(Config) ->
    [code:del_path(E) || {telemetry_ebin, E} <- Config],
    ok.

%% -- the list backend --------------------------------------------------------------------

list_backend(Config) ->
    case proplists:get_value(telemetry_skip, Config) of
        undefined -> list_backend_run();
        Why -> {skip, Why}
    end.

list_backend_run() ->
    Names = [disc_l1, disc_l2, disc_l3, disc_l4],
    Ports = free_ports(length(Names)),
    Addresses = [iolist_to_binary(io_lib:format("~s@127.0.0.1:~b", [N, P]))
                 || {N, P} <- lists:zip(Names, Ports)],
    %% Configured but not enabled at start: each node is enabled once its telemetry handler is
    %% attached, so that the first probes are seen too.
    Discovery = ?DISCOVERY#{type => partisan_peer_discovery_list, enabled => false,
                            config => #{addresses => Addresses}},
    [L1, L2, L3, L4] = [node_name(N, "127.0.0.1") || N <- Names],
    %% Three nodes, each told about all four; nobody calls join.
    Started = [partisan_ct:start_node(N, ?ENV#{listen_port => P, peer_discovery => Discovery})
               || {N, P} <- lists:zip(lists:sublist(Names, 3), lists:sublist(Ports, 3))],
    Peers = [P || {ok, P} <- Started],
    try
        3 = length(Peers),
        [begin
             ok = partisan_ct:rpc(N, partisan_telemetry_ct, attach, []),
             ?assertEqual(disabled, partisan_ct:rpc(N, partisan_peer_discovery_agent, status, [])),
             ?assertEqual({error, disabled}, partisan_ct:rpc(N, partisan_peer_discovery_agent, lookup, [])),
             ok = partisan_ct:rpc(N, partisan_peer_discovery_agent, enable, [])
         end || N <- [L1, L2, L3]],
        ok = wait(fun() -> lists:all(fun(N) -> members(N) =:= [L1, L2, L3] end, [L1, L2, L3]) end),
        ok = partisan_ct:wait_fully_connected([L1, L2, L3], ?TIMEOUT),
        ?assertEqual(enabled, partisan_ct:rpc(L1, partisan_peer_discovery_agent, status, [])),
        {ok, Looked} = partisan_ct:rpc(L1, partisan_peer_discovery_agent, lookup, []),
        ?assertEqual([L1, L2, L3, L4], lists:sort([N || #{name := N} <- Looked])),
        [{_, #{peers := 3, duration := D}, #{backend := partisan_peer_discovery_list, result := ok}, _} | _] =
            partisan_ct:rpc(L1, partisan_telemetry_ct, events, [[partisan, peer_discovery, lookup]]),
        ?assert(is_integer(D) andalso D >= 0),

        %% The fourth does not answer: L1 probes it again after 100, 200, 400, 800, 1600 ms.
        ok = wait(fun() -> length(unreachable(L1, L4)) >= 5 end),
        Tries = lists:sublist(unreachable(L1, L4), 5),
        ct:pal("~p probing ~p: ~p",
               [L1, L4, [{A, In, T} || {_, #{attempt := A, retry_in := In}, _, T} <- Tries]]),
        check_backoff(Tries),
        Doublings = [x || {{_, #{retry_in := In}, _, _}, {_, #{retry_in := In1}, _, _}}
                              <- lists:zip(lists:droplast(Tries), tl(Tries)), In1 =:= 2 * In],
        ?assert(length(Doublings) >= 3),
        ?assertNot(lists:member(L4, members(L1))),

        %% It comes up (without discovery of its own, on its listed port): the others join it.
        {ok, P4} = partisan_ct:start_node(disc_l4, ?ENV#{listen_port => lists:last(Ports)}),
        try
            ok = wait(fun() -> lists:all(fun(N) -> members(N) =:= [L1, L2, L3, L4] end,
                                         [L1, L2, L3, L4]) end),
            ok = partisan_ct:wait_fully_connected([L1, L2, L3, L4], ?TIMEOUT),
            Joins = [{N, J} || N <- [L1, L2, L3],
                               {_, #{attempt := J}, #{node := Node}, _}
                                   <- partisan_ct:rpc(N, partisan_telemetry_ct, events,
                                                      [[partisan, peer_discovery, join]]),
                               Node =:= L4],
            ct:pal("joins of ~p (node, attempt): ~p", [L4, Joins]),
            ?assertNotEqual([], Joins),
            ?assertEqual(disabled, partisan_ct:rpc(L4, partisan_peer_discovery_agent, status, []))
        after
            partisan_ct:stop_cluster([P4])
        end
    after
        partisan_ct:stop_cluster(Peers)
    end.

unreachable(Observer, Node) ->
    [E || E = {_, _, #{node := N}, _}
              <- partisan_ct:rpc(Observer, partisan_telemetry_ct, events,
                                 [[partisan, peer_discovery, unreachable]]),
          N =:= Node].

%% Consecutive failed probes: attempt numbers follow each other, the announced wait doubles (up
%% to the cap), and the next probe really came no sooner than announced.
check_backoff([_]) ->
    ok;
check_backoff([{_, #{attempt := A, retry_in := In}, _, T}, {_, #{attempt := A1, retry_in := In1}, _, T1} = Next | Rest]) ->
    ?assertEqual(A + 1, A1),
    ?assertEqual(min(2 * In, 1600), In1),
    ?assert(T1 - T >= In - 5),
    check_backoff([Next | Rest]).

%% -- the DNS backend ---------------------------------------------------------------------

dns_a_records(_Config) ->
    Port = hd(free_ports(1)),
    Hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4"],
    {ok, Dns, DnsPort} = partisan_test_dns:start(zone_a(Hosts)),
    Discovery = ?DISCOVERY#{type => partisan_peer_discovery_dns,
                            config => #{record_type => a, name => "nodes.partisan.test",
                                        nodename => "disc",
                                        nameservers => [{{127, 0, 0, 1}, DnsPort}]}},
    Env = fun(Host) -> ?ENV#{listen_ip => Host, listen_port => Port, peer_discovery => Discovery} end,
    Peers = [stdio_peer(disc, H, Env(H)) || H <- Hosts],
    Nodes = [node_name(disc, H) || H <- Hosts],
    try
        ok = wait(fun() -> lists:all(fun(P) -> stdio_members(P) =:= Nodes end, Peers) end),
        ok = wait(fun() -> fully_connected(Peers, Nodes) end),
        ?assert(lists:member({"nodes.partisan.test", a}, partisan_test_dns:queries(Dns))),

        %% A fourth host is added to the records; its node starts and joins by itself.
        Host4 = "127.0.0.5",
        ok = partisan_test_dns:set_zone(Dns, zone_a(Hosts ++ [Host4])),
        P4 = stdio_peer(disc, Host4, Env(Host4)),
        All = Nodes ++ [node_name(disc, Host4)],
        try
            ok = wait(fun() -> lists:all(fun(P) -> stdio_members(P) =:= All end, Peers ++ [P4]) end),
            ok = wait(fun() -> fully_connected(Peers ++ [P4], All) end)
        after
            catch peer:stop(P4)
        end
    after
        [catch peer:stop(P) || P <- Peers],
        partisan_test_dns:stop(Dns)
    end.

zone_a(Hosts) ->
    {ok, IPs} = {ok, [element(2, inet:parse_address(H)) || H <- Hosts]},
    #{{"nodes.partisan.test", a} => IPs}.

dns_srv_records(_Config) ->
    Ports = free_ports(3),
    Targets = ["s1.partisan.test", "s2.partisan.test", "s3.partisan.test"],
    Zone = maps:from_list([{{"_partisan._tcp.partisan.test", srv},
                            [{0, 0, P, T} || {P, T} <- lists:zip(Ports, Targets)]}
                           | [{{T, a}, [{127, 0, 0, 1}]} || T <- Targets]]),
    {ok, Dns, DnsPort} = partisan_test_dns:start(Zone),
    Discovery = ?DISCOVERY#{type => partisan_peer_discovery_dns,
                            config => #{record_type => srv, name => <<"_partisan._tcp.partisan.test">>,
                                        nodename => <<"srv">>,
                                        nameservers => [{{127, 0, 0, 1}, DnsPort}]}},
    Peers = [stdio_peer(srv, T, ?ENV#{listen_port => P, peer_discovery => Discovery})
             || {P, T} <- lists:zip(Ports, Targets)],
    Nodes = [node_name(srv, T) || T <- Targets],
    try
        ok = wait(fun() -> lists:all(fun(P) -> stdio_members(P) =:= Nodes end, Peers) end),
        ok = wait(fun() -> fully_connected(Peers, Nodes) end),
        Asked = partisan_test_dns:queries(Dns),
        ?assert(lists:member({"_partisan._tcp.partisan.test", srv}, Asked)),
        ?assert(lists:member({"s1.partisan.test", a}, Asked))
    after
        [catch peer:stop(P) || P <- Peers],
        partisan_test_dns:stop(Dns)
    end.

%% -- helpers --------------------------------------------------------------------

%% A node named `Name@Host', alive but not listening for Distributed Erlang, driven over
%% standard_io; partisan configured with `Env' and started.
stdio_peer(Name, Host, Env) ->
    {ok, Peer, _} = peer:start(#{connection => standard_io, name => Name, host => Host,
                                 longnames => true,
                                 args => ["-dist_listen", "false", "-connect_all", "false",
                                          "-pa" | code_paths()]}),
    [ok = call(Peer, application, set_env, [partisan, K, V]) || {K, V} <- maps:to_list(Env)],
    {ok, _} = call(Peer, application, ensure_all_started, [partisan]),
    Peer.

call(Peer, M, F, A) ->
    peer:call(Peer, M, F, A, ?TIMEOUT).

stdio_members(Peer) ->
    {ok, Members} = call(Peer, partisan_peer_service, members, []),
    Members.

fully_connected(Peers, Nodes) ->
    lists:all(fun(P) ->
                      Me = call(P, partisan, node, []),
                      lists:all(fun(N) -> call(P, partisan, is_fully_connected, [N]) end, Nodes -- [Me])
              end, Peers).

members(Node) ->
    {ok, Members} = partisan_ct:rpc(Node, partisan_peer_service, members, []),
    Members.

node_name(Name, Host) ->
    list_to_atom(lists:concat([Name, "@", Host])).

%% Ports free on loopback now (the OS picks them; they are closed again at once).
free_ports(N) ->
    Sockets = [begin {ok, S} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]), S end
               || _ <- lists:seq(1, N)],
    Ports = [begin {ok, P} = inet:port(S), P end || S <- Sockets],
    [gen_tcp:close(S) || S <- Sockets],
    Ports.

%% This node's code paths outside OTP (partisan, the suites, telemetry), as partisan_ct gives
%% its peers.
code_paths() ->
    Lib = code:lib_dir(),
    [D || D <- code:get_path(), not lists:prefix(Lib, D), filename:pathtype(D) =:= absolute,
          filelib:is_dir(D)].

wait(Fun) ->
    partisan_ct:wait_until(Fun, ?TIMEOUT).
