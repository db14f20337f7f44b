%% TLS in the data plane (rustls), on real nodes with certificates made at test time
%% (partisan_tls_SUITE_data/gen_test_certs.sh, openssl): mutual TLS on the full mesh and on
%% HyParView; a wrong CA, an expired certificate, plain TCP and non-TLS bytes refused before any
%% frame is read (counted in tls_failures); a stock TLS client (openssl s_client) completes a
%% handshake with the listener; certificates rotated without a restart; client-server and static
%% overlays over TLS, with acked messages relayed through a server or a middle node.
-module(partisan_tls_SUITE).

-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([mutual_tls_full_mesh/1, mutual_tls_hyparview/1, mutual_tls_client_server/1,
         mutual_tls_static/1, wrong_ca_is_refused/1,
         expired_certificate_is_refused/1, plain_tcp_is_refused/1, openssl_s_client_handshake/1,
         certificates_rotate_without_restart/1]).

-define(TIMEOUT, 20000).
-define(config_certs(C), proplists:get_value(certs, C)).
-define(BASE, #{connection_interval => 100, connection_jitter => 100, handshake_timeout => 1000,
                channels => #{data => #{parallelism => 2}}}).

all() ->
    [mutual_tls_full_mesh, mutual_tls_hyparview, mutual_tls_client_server, mutual_tls_static,
     wrong_ca_is_refused,
     expired_certificate_is_refused, plain_tcp_is_refused, openssl_s_client_handshake,
     certificates_rotate_without_restart].

init_per_suite(Config) ->
    Dir = filename:join(proplists:get_value(priv_dir, Config), "certs"),
    Script = filename:join(proplists:get_value(data_dir, Config), "gen_test_certs.sh"),
    Out = os:cmd("sh " ++ Script ++ " " ++ Dir ++ " 2>&1; echo \"rc=$?\""),
    case string:find(Out, "rc=0") of
        nomatch -> ct:fail({certificates_not_generated, Out});
        _ -> [{certs, Dir} | Config]
    end.

end_per_suite(_Config) ->
    ok.

init_per_testcase(_, Config) ->
    Config.

%% Every node of this suite is named tls*: whatever the test did, none outlives it.
end_per_testcase(_, _Config) ->
    [partisan_ct:kill_node(N) || N <- nodes(connected), lists:prefix("tls", atom_to_list(N))],
    ok.

%% -- tests --------------------------------------------------------------------

%% Three nodes with mutual TLS form a full mesh; messages go over every channel; no TLS
%% handshake failed.
mutual_tls_full_mesh(Config) ->
    Env = maps:merge(?BASE, tls_env(Config, "node", "ca.pem")),
    Nodes = [A, B, C] = start(Config, [tls_a, tls_b, tls_c], Env),
    ok = partisan_ct:join_all(Nodes),
    [?assertEqual({ok, Nodes}, rpc(N, partisan_peer_service, members, [])) || N <- Nodes],
    [ok = partisan_ct:check_delivery(From, To, Ch, ?TIMEOUT)
     || From <- Nodes, To <- Nodes, From =/= To, Ch <- [undefined, data]],
    ?assertEqual(true, rpc(A, partisan_config, get, [tls])),
    [?assertEqual(0, stat(N, tls_failures)) || N <- [A, B, C]],
    %% A node that leaves is seen as gone by the others, over TLS too.
    ok = rpc(C, partisan_peer_service, leave, []),
    ok = partisan_ct:wait_until(fun() -> rpc(A, partisan_peer_service, members, []) =:= {ok, [A, B]} end,
                                ?TIMEOUT).

%% HyParView over TLS: five nodes join one seed; the active views form one connected,
%% symmetric overlay and neighbours exchange messages.
mutual_tls_hyparview(Config) ->
    Env = maps:merge(?BASE#{peer_service_manager => partisan_hyparview_peer_service_manager,
                            hyparview => #{active_max_size => 3, active_min_size => 1,
                                           shuffle_interval => 1000,
                                           random_promotion_interval => 500}},
                     tls_env(Config, "node", "ca.pem")),
    Nodes = [Seed | Rest] = start(Config, [tlshv1, tlshv2, tlshv3, tlshv4, tlshv5], Env),
    SeedSpec = rpc(Seed, partisan, node_spec, []),
    [ok = rpc(N, partisan_peer_service, join, [SeedSpec]) || N <- Rest],
    Healthy = fun() ->
        Views = maps:from_list([{N, rpc(N, partisan, nodes, [])} || N <- Nodes]),
        Symmetric = lists:all(fun({N, V}) -> lists:all(fun(M) -> lists:member(N, maps:get(M, Views, [])) end, V) end,
                              maps:to_list(Views)),
        Symmetric andalso lists:sort(reach([Seed], Views, [])) =:= lists:sort(Nodes)
    end,
    case partisan_ct:wait_until(Healthy, ?TIMEOUT) of
        ok -> ok;
        {error, timeout} -> ct:fail({overlay_not_healthy, [{N, rpc(N, partisan, nodes, [])} || N <- Nodes]})
    end,
    %% Random promotion may change a view between the check above and a send.
    [?assertEqual(ok, partisan_ct:check_delivery_to_a_neighbour(N, data, ?TIMEOUT)) || N <- Nodes],
    [?assertEqual(0, stat(N, tls_failures)) || N <- Nodes].

%% Client-server over TLS: two servers and two clients; servers link to everyone, clients only
%% to servers; a client's message to the other client, sent with `ack', goes through a server.
mutual_tls_client_server(Config) ->
    Env = maps:merge(?BASE#{peer_service_manager => partisan_client_server_peer_service_manager},
                     tls_env(Config, "node", "ca.pem")),
    Servers = [S1, _] = start(Config, [tlss1, tlss2], Env#{tag => server}),
    Clients = [C1, C2] = start(Config, [tlsc1, tlsc2], Env#{tag => client}),
    Nodes = Servers ++ Clients,
    SeedSpec = rpc(S1, partisan, node_spec, []),
    [ok = rpc(N, partisan_peer_service, join, [SeedSpec]) || N <- tl(Nodes)],
    Expected = fun(N) -> case lists:member(N, Servers) of
                             true -> lists:sort(Nodes -- [N]);
                             false -> lists:sort(Servers)
                         end end,
    ok = partisan_ct:wait_until(fun() -> lists:all(fun(N) -> rpc(N, partisan, nodes, []) =:= Expected(N) end,
                                                   Nodes) end, ?TIMEOUT),
    ok = partisan_ct:wait_until(fun() -> lists:all(fun(C) -> rpc(C, partisan, is_fully_connected, [S1]) end,
                                                   Clients) end, ?TIMEOUT),
    [ok = partisan_ct:check_delivery(C, S1, data, ?TIMEOUT) || C <- Clients],
    ok = partisan_ct:check_delivery(S1, C2, data, ?TIMEOUT),
    relayed_with_ack(C1, C2),
    [?assertEqual(0, stat(N, tls_failures)) || N <- Nodes].

%% Static over TLS: A and C each join B only; they stay unlinked, and A's acked message to C
%% goes through B.
mutual_tls_static(Config) ->
    Env = maps:merge(?BASE#{peer_service_manager => partisan_static_peer_service_manager},
                     tls_env(Config, "node", "ca.pem")),
    Nodes = [A, B, C] = start(Config, [tlsst_a, tlsst_b, tlsst_c], Env),
    SpecB = rpc(B, partisan, node_spec, []),
    ok = rpc(A, partisan_peer_service, sync_join, [SpecB]),
    ok = rpc(C, partisan_peer_service, sync_join, [SpecB]),
    ok = partisan_ct:wait_fully_connected([A, B], ?TIMEOUT),
    ok = partisan_ct:wait_fully_connected([B, C], ?TIMEOUT),
    ?assertEqual([B], rpc(A, partisan, nodes, [])),
    ?assertEqual([B], rpc(C, partisan, nodes, [])),
    ok = partisan_ct:check_delivery(A, B, data, ?TIMEOUT),
    ok = partisan_ct:check_delivery(B, C, undefined, ?TIMEOUT),
    relayed_with_ack(A, C),
    [?assertEqual(0, stat(N, tls_failures)) || N <- Nodes].

%% A node whose certificate chains to another CA (it trusts the cluster's CA, so it accepts the
%% listener) is refused by the listener during the TLS handshake: counted in tls_failures, and
%% it never becomes a member.
wrong_ca_is_refused(Config) ->
    refused_by_certificate(Config, "wrong", "ca_both.pem").

%% A certificate signed by the cluster's CA but expired is refused the same way.
expired_certificate_is_refused(Config) ->
    refused_by_certificate(Config, "expired", "ca.pem").

refused_by_certificate(Config, Cert, Trust) ->
    Env = maps:merge(?BASE, tls_env(Config, "node", "ca.pem")),
    [A, B] = start(Config, [tls_ok1, tls_ok2], Env),
    ok = partisan_ct:join_all([A, B]),
    [Bad] = start(Config, [tls_bad], maps:merge(?BASE, tls_env(Config, Cert, Trust))),
    Before = stat(A, tls_failures),
    ?assertEqual({error, timeout},
                 rpc(Bad, partisan_peer_service, sync_join, [rpc(A, partisan, node_spec, []), 1000])),
    ok = partisan_ct:wait_until(fun() -> stat(A, tls_failures) > Before end, ?TIMEOUT),
    ct:pal("~s: tls_failures on the listener ~p -> ~p, on the refused node ~p",
           [Cert, Before, stat(A, tls_failures), stat(Bad, tls_failures)]),
    ?assertEqual({ok, [A, B]}, rpc(A, partisan_peer_service, members, [])),
    ?assertEqual([B], rpc(A, partisan, nodes, [])),
    ?assertEqual([], rpc(Bad, partisan, nodes, [])),
    ok = partisan_ct:check_delivery(B, A, data, ?TIMEOUT).

%% A node without TLS cannot join a TLS cluster (both sides wait for the other's first bytes:
%% the handshake times out), and bytes that are not TLS are refused before they reach the frame
%% decoder (counted in tls_failures), whatever they are.
plain_tcp_is_refused(Config) ->
    [A] = start(Config, [tls_srv], maps:merge(?BASE, tls_env(Config, "node", "ca.pem"))),
    [Plain] = start(Config, [tls_plain], ?BASE),
    ?assertEqual({error, timeout},
                 rpc(Plain, partisan_peer_service, sync_join, [rpc(A, partisan, node_spec, []), 1500])),
    ?assertEqual([], rpc(A, partisan, nodes, [])),
    ?assertEqual({ok, [A]}, rpc(A, partisan_peer_service, members, [])),
    #{listen_addrs := [#{ip := IP, port := Port}]} = rpc(A, partisan, node_spec, []),
    Payload = term_to_binary(sneaked_in),
    Frames = [<<(14 + byte_size(Payload)):32, 16, 1, 10:16, "tls_target", Payload/binary>>,
              crypto:strong_rand_bytes(512)],
    lists:foreach(fun(Bytes) ->
                          Before = stat(A, tls_failures),
                          {ok, Sock} = gen_tcp:connect(IP, Port, [binary, {active, false}]),
                          ok = gen_tcp:send(Sock, Bytes),
                          _ = gen_tcp:recv(Sock, 0, ?TIMEOUT),
                          gen_tcp:close(Sock),
                          ok = partisan_ct:wait_until(fun() -> stat(A, tls_failures) > Before end, ?TIMEOUT)
                  end, Frames),
    ?assertEqual(0, stat(A, messages_received)).

%% openssl s_client completes a TLS handshake with the listener (mutual TLS: it presents a
%% certificate of the cluster's CA) and verifies the listener's certificate.
openssl_s_client_handshake(Config) ->
    [A] = start(Config, [tls_ossl], maps:merge(?BASE, tls_env(Config, "node", "ca.pem"))),
    #{listen_addrs := [#{port := Port}]} = rpc(A, partisan, node_spec, []),
    Dir = ?config_certs(Config),
    Out = s_client(Config, io_lib:format("-connect 127.0.0.1:~b -CAfile ~s/ca.pem -cert ~s/node.pem "
                                         "-key ~s/node.key -verify_return_error -brief",
                                         [Port, Dir, Dir, Dir])),
    ?assertNotEqual(nomatch, string:find(Out, "CONNECTION ESTABLISHED")),
    ?assertNotEqual(nomatch, string:find(Out, "Verification: OK")),
    ?assertNotEqual(nomatch, string:find(Out, "rc=0")),
    %% Without a client certificate the listener (fail_if_no_peer_cert) refuses the handshake.
    Before = stat(A, tls_failures),
    _ = s_client(Config, io_lib:format("-connect 127.0.0.1:~b -CAfile ~s/ca.pem -brief", [Port, Dir])),
    ok = partisan_ct:wait_until(fun() -> stat(A, tls_failures) > Before end, ?TIMEOUT).

%% Certificates are re-read on partisan_config:set/2: A's files are replaced by a certificate
%% of another CA (and trust only that CA); once the link reconnects, A and B refuse each other.
%% B's files are replaced the same way; they reconnect, with no restart.
certificates_rotate_without_restart(Config) ->
    Certs = ?config_certs(Config),
    DirA = own_files(Config, "rot_a", "node", "ca.pem"),
    DirB = own_files(Config, "rot_b", "node", "ca.pem"),
    [A] = start(Config, [tls_rot_a], maps:merge(?BASE, tls_env_in(DirA))),
    [B] = start(Config, [tls_rot_b], maps:merge(?BASE, tls_env_in(DirB))),
    ok = partisan_ct:join_all([A, B]),
    Rotate = fun(N, Dir) ->
        copy_identity(Certs, "wrong", "ca2.pem", Dir),
        #{tls_server_options := S, tls_client_options := C} = tls_env_in(Dir),
        ok = rpc(N, partisan_config, set, [tls_server_options, S]),
        ok = rpc(N, partisan_config, set, [tls_client_options, C])
    end,
    Rotate(A, DirA),
    Before = stat(A, tls_failures) + stat(B, tls_failures),
    %% Force a reconnect: the links made after the reload use the new files.
    {ok, _} = rpc(A, partisan_peer_service, inject_partition, [B, 0]),
    ok = rpc(A, partisan_peer_service, resolve_partition, [B]),
    ok = partisan_ct:wait_until(fun() -> stat(A, tls_failures) + stat(B, tls_failures) > Before end, ?TIMEOUT),
    ?assertEqual(false, rpc(A, partisan, is_connected, [B])),
    Rotate(B, DirB),
    ok = partisan_ct:wait_fully_connected([A, B], ?TIMEOUT),
    ok = partisan_ct:check_delivery(A, B, data, ?TIMEOUT),
    ok = partisan_ct:check_delivery(B, A, data, ?TIMEOUT),
    %% A file that cannot be read is refused and the files in use stay in use.
    {error, {invalid_config, tls_server_options, _}} =
        rpc(A, partisan_config, set, [tls_server_options, [{certfile, "/nonexistent.pem"},
                                                           {keyfile, "/nonexistent.key"}]]).

%% -- helpers ------------------------------------------------------------------

%% `From' and `To' are not linked: 20 messages sent with `ack' travel through the overlay and
%% arrive once, in order.
relayed_with_ack(From, To) ->
    ?assertEqual(false, rpc(From, partisan, is_connected, [To])),
    Fwd = rpc(To, partisan_ct, forwarder, [self()]),
    [?assertEqual(ok, rpc(From, partisan, forward_message, [Fwd, {relayed, I}, #{ack => true}]))
     || I <- lists:seq(1, 20)],
    [?assertEqual({ok, {relayed, I}}, partisan_ct:recv(Fwd, ?TIMEOUT)) || I <- lists:seq(1, 20)],
    ok = partisan_ct:wait_until(fun() -> maps:get(unacked_messages, rpc(From, partisan, stats, [])) =:= 0 end,
                                ?TIMEOUT).

%% Runs `openssl s_client Args' (stdin closed, bounded) and returns its output and `rc=Status'.
%% The output goes through a file: it holds the listener's first frame, binary bytes, and
%% os:cmd/1 stops reading at a byte 4.
s_client(Config, Args) ->
    File = filename:join(proplists:get_value(priv_dir, Config),
                         "s_client_" ++ integer_to_list(erlang:unique_integer([positive]))),
    Cmd = lists:flatten(io_lib:format("timeout 20 openssl s_client ~s </dev/null >~s 2>&1; echo \"rc=$?\"",
                                      [Args, File])),
    Rc = string:trim(os:cmd(Cmd)),
    {ok, Bin} = file:read_file(File),
    Out = [binary_to_list(Bin), "\n", Rc],
    ct:pal("~s~n~s", [Cmd, [if C >= 32; C =:= $\n -> C; true -> $. end || C <- lists:flatten(Out)]]),
    lists:flatten(Out).

tls_env(Config, Cert, Trust) ->
    tls_env_files(proplists:get_value(certs, Config), Cert, Trust).

tls_env_files(Dir, Cert, Trust) ->
    F = fun(Name) -> filename:join(Dir, Name) end,
    #{tls => true,
      tls_server_options => [{certfile, F(Cert ++ ".pem")}, {keyfile, F(Cert ++ ".key")},
                             {cacertfile, F(Trust)}, {verify, verify_peer},
                             {fail_if_no_peer_cert, true}],
      tls_client_options => [{certfile, F(Cert ++ ".pem")}, {keyfile, F(Cert ++ ".key")},
                             {cacertfile, F(Trust)}, {verify, verify_peer}]}.

%% A node's own copies of its files (cert.pem, cert.key, trust.pem), which rotation rewrites.
own_files(Config, Name, Cert, Trust) ->
    Dir = filename:join(proplists:get_value(priv_dir, Config), Name),
    ok = filelib:ensure_path(Dir),
    copy_identity(proplists:get_value(certs, Config), Cert, Trust, Dir),
    Dir.

copy_identity(From, Cert, Trust, Dir) ->
    {ok, _} = file:copy(filename:join(From, Cert ++ ".pem"), filename:join(Dir, "cert.pem")),
    {ok, _} = file:copy(filename:join(From, Cert ++ ".key"), filename:join(Dir, "cert.key")),
    {ok, _} = file:copy(filename:join(From, Trust), filename:join(Dir, "trust.pem")),
    ok.

tls_env_in(Dir) ->
    tls_env_files(Dir, "cert", "trust.pem").

%% Starts the nodes (end_per_testcase stops them, whatever the test did).
start(_Config, Names, Env) ->
    [begin {ok, {_, N}} = partisan_ct:start_node(Name, Env), N end || Name <- Names].

reach([], _Views, Seen) -> Seen;
reach([N | Rest], Views, Seen) ->
    case lists:member(N, Seen) of
        true -> reach(Rest, Views, Seen);
        false -> reach(Rest ++ maps:get(N, Views, []), Views, [N | Seen])
    end.

stat(N, Key) ->
    maps:get(Key, rpc(N, partisan, stats, [])).

rpc(N, M, F, A) ->
    partisan_ct:rpc(N, M, F, A).
