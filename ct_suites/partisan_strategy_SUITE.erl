%% Bring your own overlay in Erlang: a `partisan_membership_strategy' module (a ring, see
%% `partisan_ring_strategy') decides the members while the Rust data plane owns the links.
-module(partisan_strategy_SUITE).

-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_testcase/2, end_per_testcase/2]).
-export([ring_strategy_links_ring_neighbours/1, bad_strategy_is_rejected/1]).

-define(TIMEOUT, 15000).
-define(NAMES, [rs1, rs2, rs3, rs4, rs5]).
-define(ENV, #{membership_strategy => partisan_ring_strategy, periodic_interval => 300,
               connection_interval => 100, connection_jitter => 100,
               channels => #{data => #{parallelism => 2}}}).

all() -> [ring_strategy_links_ring_neighbours, bad_strategy_is_rejected].

init_per_testcase(ring_strategy_links_ring_neighbours, Config) ->
    [{peers, [begin {ok, P} = partisan_ct:start_node(N, ?ENV), P end || N <- ?NAMES]} | Config];
init_per_testcase(bad_strategy_is_rejected, Config) ->
    {ok, P} = partisan_ct:start_node(rs_bad, #{}),
    [{peers, [P]} | Config].

end_per_testcase(_, Config) ->
    partisan_ct:stop_cluster(proplists:get_value(peers, Config)).

ring_strategy_links_ring_neighbours(Config) ->
    Nodes = [N || {_, N} <- proplists:get_value(peers, Config)],
    [Seed | Rest] = Nodes,
    SeedSpec = partisan_ct:rpc(Seed, partisan, node_spec, []),
    [ok = partisan_ct:rpc(N, partisan_peer_service, join, [SeedSpec]) || N <- Rest],
    Ring = lists:sort(Nodes),
    Expected = fun(N) -> ring_neighbours(N, Ring) end,
    Settled = fun() -> lists:all(fun(N) -> partisan_ct:rpc(N, partisan, nodes, []) =:= Expected(N) end, Nodes) end,
    case partisan_ct:wait_until(Settled, ?TIMEOUT) of
        ok -> ok;
        {error, timeout} -> ct:fail({ring_not_formed, [{N, partisan_ct:rpc(N, partisan, nodes, [])} || N <- Nodes]})
    end,
    %% Links are real: ring neighbours exchange messages on every channel, others are not linked.
    [A, B, C | _] = Ring,
    Fwd = partisan_ct:rpc(B, partisan_ct, forwarder, [self()]),
    ok = partisan_ct:rpc(A, partisan, forward_message, [Fwd, ring_hello, #{channel => data}]),
    receive {partisan_ct, Fwd, ring_hello} -> ok after ?TIMEOUT -> ct:fail(not_delivered) end,
    ?assertEqual({error, not_connected}, partisan_ct:rpc(A, partisan, forward_message, [C, x, hi, #{}])),
    ?assertEqual({ok, lists:sort([A | Expected(A)])}, partisan_ct:rpc(A, partisan_peer_service, members, [])).

bad_strategy_is_rejected(Config) ->
    [{_, N}] = proplists:get_value(peers, Config),
    ok = partisan_ct:rpc(N, application, stop, [partisan]),
    ok = partisan_ct:rpc(N, application, set_env, [partisan, membership_strategy, lists]),
    ?assertMatch({error, {partisan, {{invalid_config, membership_strategy, _}, _}}},
                 partisan_ct:rpc(N, application, ensure_all_started, [partisan])).

ring_neighbours(N, Ring) ->
    Len = length(Ring),
    I = length(lists:takewhile(fun(X) -> X =/= N end, Ring)),
    lists:usort([lists:nth(((I + 1) rem Len) + 1, Ring), lists:nth(((I - 1 + Len) rem Len) + 1, Ring)]).
