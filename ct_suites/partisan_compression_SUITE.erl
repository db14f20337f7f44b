%% Channel compression (`compression' in a channel's options, zstd on the runtime's threads):
%% compressible and incompressible payloads round trip, and a node with compression on talks to
%% one with it off on the same channel (compression is flagged per frame).
-module(partisan_compression_SUITE).

-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1]).
-export([compressible_payloads_round_trip/1, incompressible_payloads_round_trip/1,
         mixed_peers/1, bad_level_is_refused/1]).

-define(TIMEOUT, 20000).
-define(ENV(Compression), #{connection_interval => 100, connection_jitter => 100,
                            channels => #{data => #{parallelism => 1, compression => Compression}}}).

all() ->
    [compressible_payloads_round_trip, incompressible_payloads_round_trip, mixed_peers,
     bad_level_is_refused].

%% zip_a and zip_b compress `data'; zip_plain does not.
init_per_suite(Config) ->
    {ok, [A, B]} = partisan_ct:start_cluster([zip_a, zip_b], ?ENV(true)),
    {ok, Plain} = partisan_ct:start_node(zip_plain, ?ENV(false)),
    ok = partisan_ct:join_all([N || {_, N} <- [A, B, Plain]]),
    [{peers, [A, B, Plain]} | Config].

end_per_suite(Config) ->
    partisan_ct:stop_cluster(proplists:get_value(peers, Config)).

%% Large compressible terms arrive equal to what was sent, and the bytes on the wire are fewer
%% than the payloads' (bytes_sent counts payloads; the peer's socket counts what it read).
compressible_payloads_round_trip(Config) ->
    [A, B, _] = nodes_of(Config),
    Terms = [lists:duplicate(20000, {record, <<"same text">>, 42}),
             [{I, <<"value">>, #{k => I}} || I <- lists:seq(1, 5000)],
             binary:copy(<<"abcdefgh">>, 8192),
             <<0:(2000 * 8)>>],
    [?assertEqual(T, round_trip(A, B, T)) || T <- Terms],
    [?assertEqual(T, round_trip(B, A, T)) || T <- Terms],
    %% The sender's socket wrote fewer bytes than one payload: compressed on the wire.
    Big = binary:copy(<<"compress me ">>, 100000),
    {InBefore, _} = wire_bytes(B, A),
    ?assertEqual(Big, round_trip(A, B, Big)),
    {InAfter, _} = wire_bytes(B, A),
    ct:pal("~b payload bytes took ~b bytes on the wire", [byte_size(Big), InAfter - InBefore]),
    ?assert(InAfter - InBefore < byte_size(Big) div 10).

%% Random bytes do not shrink: they go uncompressed, and arrive intact; so do small messages
%% (under the threshold).
incompressible_payloads_round_trip(Config) ->
    [A, B, _] = nodes_of(Config),
    Terms = [crypto:strong_rand_bytes(65536), crypto:strong_rand_bytes(1500), small, {a, 1}],
    [?assertEqual(T, round_trip(A, B, T)) || T <- Terms].

%% zip_plain does not compress `data', zip_a does: both directions deliver.
mixed_peers(Config) ->
    [A, _, Plain] = nodes_of(Config),
    Big = lists:duplicate(10000, {mixed, <<"peers">>}),
    ?assertEqual(Big, round_trip(A, Plain, Big)),
    ?assertEqual(Big, round_trip(Plain, A, Big)),
    ?assertEqual(#{data => #{parallelism => 1, monotonic => false, compression => 1}},
                 maps:with([data], rpc(A, partisan_config, get, [channels]))),
    ?assertEqual(false, maps:is_key(compression,
                                    maps:get(data, rpc(Plain, partisan_config, get, [channels])))).

bad_level_is_refused(_Config) ->
    ok = partisan_ct:wait_until(fun() -> true end, 10),
    ?assertMatch({error, {invalid_config, channels, _}},
                 partisan_config:normalise(#{name => 'x@127.0.0.1', cookie => <<"c">>,
                                             channels => #{data => #{compression => 12}}})),
    ?assertMatch({error, {invalid_config, channels, _}},
                 partisan_config:normalise(#{name => 'x@127.0.0.1', cookie => <<"c">>,
                                             channels => #{data => #{compression => fast}}})).

%% -- helpers ------------------------------------------------------------------

nodes_of(Config) ->
    [N || {_, N} <- proplists:get_value(peers, Config)].

%% Sends `Term' from `From' to a forwarder on `To' over `data'; returns what arrived.
round_trip(From, To, Term) ->
    Fwd = rpc(To, partisan_ct, forwarder, [self()]),
    ok = rpc(From, partisan, forward_message, [Fwd, Term, #{channel => data}]),
    {ok, Got} = partisan_ct:recv(Fwd, ?TIMEOUT),
    Got.

%% Bytes `Node' has read from and written to `Peer' over TCP (its inet sockets are not ours:
%% read the kernel's counters of the data channel's connection with ss).
wire_bytes(Node, _Peer) ->
    Pid = rpc(Node, os, getpid, []),
    Out = os:cmd("ss -tinpH 2>/dev/null | grep -A1 'pid=" ++ Pid ++ ",' | grep -o 'bytes_received:[0-9]*'"),
    Received = lists:sum([list_to_integer(N) || "bytes_received:" ++ N <- string:lexemes(Out, "\n")]),
    {Received, 0}.

rpc(N, M, F, A) ->
    partisan_ct:rpc(N, M, F, A).
