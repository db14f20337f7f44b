%% Trust boundaries: garbage on the listening port, a node with the wrong cookie, messages
%% carrying atoms the receiver has never seen (trusted and safe decoding).
-module(partisan_security_SUITE).

-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([garbage_is_rejected/1, bad_cookie_cannot_join/1, new_atom_is_created/1,
         safe_decode_drops_new_atom/1]).
%% Run on peers.
-export([send_new_atom/3]).

-define(ENV, #{connection_interval => 100, connection_jitter => 100}).
-define(TIMEOUT, 10000).

all() ->
    [garbage_is_rejected, bad_cookie_cannot_join, new_atom_is_created, safe_decode_drops_new_atom].

%% `sec_a' and `sec_b' decode trusted, `sec_s' safe.
init_per_suite(Config) ->
    {ok, Peers} = partisan_ct:start_cluster([sec_a, sec_b], ?ENV),
    {ok, Safe} = partisan_ct:start_node(sec_s, ?ENV#{decode => safe}),
    All = Peers ++ [Safe],
    ok = partisan_ct:join_all([N || {_, N} <- All]),
    [{peers, All} | Config].

end_per_suite(Config) ->
    partisan_ct:stop_cluster(proplists:get_value(peers, Config)).

init_per_testcase(bad_cookie_cannot_join, Config) ->
    {ok, Evil} = partisan_ct:start_node(sec_evil, ?ENV#{cookie => <<"not the cluster's">>}),
    [{evil, Evil} | Config];
init_per_testcase(_, Config) ->
    Config.

end_per_testcase(bad_cookie_cannot_join, Config) ->
    partisan_ct:stop_cluster([proplists:get_value(evil, Config)]);
end_per_testcase(_, _) ->
    ok.

%% -- tests --------------------------------------------------------------------

%% Random bytes, a huge length prefix, a well-framed unknown frame type, and a message frame
%% before the handshake: each connection is closed and counted, the message is not delivered,
%% and the node keeps serving its cluster.
garbage_is_rejected(Config) ->
    [A, B, S] = cluster(Config),
    #{listen_addrs := [#{ip := IP, port := Port}]} = rpc(A, partisan, node_spec, []),
    Fwd = rpc(A, partisan_ct, forwarder, [self()]),
    true = rpc(A, erlang, register, [sec_target, Fwd]),
    Payload = term_to_binary(sneaked_in),
    Garbage = [<<255, (crypto:strong_rand_bytes(4095))/binary>>,
               <<16#7fffffff:32>>,
               <<100:32, 99, (crypto:strong_rand_bytes(99))/binary>>,
               <<(14 + byte_size(Payload)):32, 16, 1, 10:16, "sec_target", Payload/binary>>],
    lists:foreach(fun(Bytes) ->
                          Before = rejections(A),
                          {ok, Sock} = gen_tcp:connect(IP, Port, [binary, {active, false}]),
                          ok = gen_tcp:send(Sock, Bytes),
                          ?assert(lists:member(recv_until_closed(Sock), [closed, econnreset])),
                          wait(fun() -> rejections(A) > Before end)
                  end, Garbage),
    ?assertEqual([B, S], rpc(A, partisan, nodes, [])),
    ?assertEqual(ok, rpc(B, partisan, forward_message, [Fwd, still_serving, #{}])),
    ?assertEqual(still_serving, recv(Fwd)).

bad_cookie_cannot_join(Config) ->
    Nodes = [A, _, _] = cluster(Config),
    {_, Evil} = proplists:get_value(evil, Config),
    #{auth_failures := Before} = rpc(A, partisan, stats, []),
    ?assertEqual({error, timeout},
                 rpc(Evil, partisan_peer_service, sync_join, [rpc(A, partisan, node_spec, []), 1000])),
    %% Both ends count the refused handshake (a loaded machine may not have dialed within 1 s).
    AuthFailures = fun(N) -> maps:get(auth_failures, rpc(N, partisan, stats, [])) end,
    wait(fun() -> AuthFailures(Evil) > 0 andalso AuthFailures(A) > Before end),
    ?assertEqual([], rpc(Evil, partisan, nodes, [])),
    [?assertEqual({ok, Nodes}, rpc(N, partisan_peer_service, members, [])) || N <- Nodes],
    [?assertEqual(Nodes -- [N], rpc(N, partisan, nodes, [])) || N <- Nodes].

%% Like Distributed Erlang between authenticated peers: the atom is created on receipt.
new_atom_is_created(Config) ->
    [A, B, _] = cluster(Config),
    Fwd = rpc(B, partisan_ct, forwarder, [self()]),
    Name = unique_name(),
    ?assertError({exception, badarg, _}, rpc(B, erlang, list_to_existing_atom, [Name])),
    ?assertEqual(ok, rpc(A, ?MODULE, send_new_atom, [Fwd, Name, #{}])),
    ?assertEqual({new_atom, list_to_atom(Name)}, recv(Fwd)),
    ?assertEqual(list_to_atom(Name), rpc(B, erlang, list_to_existing_atom, [Name])).

%% With `decode => safe' the message is dropped and counted, and the node keeps working.
safe_decode_drops_new_atom(Config) ->
    [A, _, S] = cluster(Config),
    Fwd = rpc(S, partisan_ct, forwarder, [self()]),
    Name = unique_name(),
    #{undecodable := Undecodable} = rpc(S, partisan, stats, []),
    ?assertEqual(ok, rpc(A, ?MODULE, send_new_atom, [Fwd, Name, #{partition_key => 0}])),
    %% Same connection: when `known' arrives, the first message was handled.
    ?assertEqual(ok, rpc(A, partisan, forward_message, [Fwd, known, #{partition_key => 0}])),
    ?assertEqual(known, recv(Fwd)),
    ?assertMatch(#{undecodable := U} when U =:= Undecodable + 1, rpc(S, partisan, stats, [])),
    ?assertError({exception, badarg, _}, rpc(S, erlang, list_to_existing_atom, [Name])),
    ?assert(lists:member(S, rpc(A, partisan, nodes, []))).

%% -- run on peers ---------------------------------------------------------------

%% Sends `{new_atom, list_to_atom(Name)}': the atom exists only here until it arrives.
send_new_atom(Dest, Name, Opts) ->
    partisan:forward_message(Dest, {new_atom, list_to_atom(Name)}, Opts).

%% -- helpers ------------------------------------------------------------------

cluster(Config) -> partisan_ct:nodes(proplists:get_value(peers, Config)).

rpc(Node, M, F, A) ->
    partisan_ct:rpc(Node, M, F, A).

wait(Fun) ->
    ?assertEqual(ok, partisan_ct:wait_until(Fun, ?TIMEOUT)).

recv(From) ->
    case partisan_ct:recv(From, ?TIMEOUT) of
        {ok, Msg} -> Msg;
        {error, timeout} -> ct:fail({no_message_from, From})
    end.

rejections(Node) ->
    #{bad_frames := F, auth_failures := A} = rpc(Node, partisan, stats, []),
    F + A.

recv_until_closed(S) ->
    case gen_tcp:recv(S, 0, ?TIMEOUT) of
        {ok, _Refusal} -> recv_until_closed(S);
        {error, Reason} -> gen_tcp:close(S), Reason
    end.

unique_name() ->
    "partisan_ct_" ++ integer_to_list(erlang:unique_integer([positive])) ++ "_"
        ++ binary_to_list(binary:encode_hex(crypto:strong_rand_bytes(8))).
