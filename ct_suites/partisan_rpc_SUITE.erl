%% partisan_erpc and partisan_rpc over the Partisan data plane between nodes that share no
%% Distributed Erlang connection (they never get one), on the full mesh and on HyParView:
%% values, every exception class, timeouts, a node that is down or killed mid-request,
%% multicall with a node down, casts, requests, funs.
-module(partisan_rpc_SUITE).

-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, init_per_group/2, end_per_group/2, init_per_testcase/2,
         end_per_testcase/2]).
-export([erpc_values_and_exceptions/1, erpc_timeout_and_noconnection/1, erpc_node_killed/1,
         erpc_multicall_and_casts/1, erpc_requests/1, rpc_call/1, never_disterl/1]).
%% Run on peers.
-export([raise/2, sleep_then/2, notify/2, outcome/2]).

-import(partisan_otp_ct, [ab/1, rpc/4, wait/1, recv/1]).

all() -> [{group, full_mesh}, {group, hyparview}].

groups() ->
    Tests = [erpc_values_and_exceptions, erpc_timeout_and_noconnection, erpc_node_killed,
             erpc_multicall_and_casts, erpc_requests, rpc_call, never_disterl],
    partisan_otp_ct:groups(Tests).

init_per_group(Group, Config) -> partisan_otp_ct:start_group(Group, "rpc") ++ Config.
end_per_group(_, Config) -> partisan_otp_ct:stop_group(Config).

init_per_testcase(_, Config) ->
    partisan_otp_ct:with_pair(Config).

end_per_testcase(_, Config) ->
    partisan_otp_ct:no_leaks(Config).

%% -- tests ------------------------------------------------------------------------

erpc_values_and_exceptions(Config) ->
    {A, B} = ab(Config),
    ?assertEqual(B, erpc(A, call, [B, erlang, node, []])),
    ?assertEqual(3, erpc(A, call, [B, lists, sum, [[1, 2]], 5000])),
    ?assertEqual(B, erpc(A, call, [B, fun() -> node() end])),
    ?assertEqual({thrown, x}, erpc(A, call, [B, ?MODULE, raise, [throw, x]])),
    ?assertEqual({exit, {exception, gone}}, erpc(A, call, [B, ?MODULE, raise, [exit, gone]])),
    {error, {exception, bad, Stack}} = erpc(A, call, [B, ?MODULE, raise, [error, bad]]),
    ?assertMatch([{?MODULE, raise, 2, _} | _], Stack),
    %% The process running the request killed (a signal, not an exception).
    ?assertEqual({exit, {signal, killed}}, erpc(A, call, [B, fun() -> exit(self(), kill) end])),
    ?assertEqual({error, {erpc, badarg}}, erpc(A, call, [B, "not a module", f, []])),
    %% This node: OTP's erpc, same answers.
    ?assertEqual(A, erpc(A, call, [A, erlang, node, []])),
    ?assertEqual({exit, {exception, gone}}, erpc(A, call, [A, ?MODULE, raise, [exit, gone]])).

erpc_timeout_and_noconnection(Config) ->
    {A, B} = ab(Config),
    ?assertEqual({error, {erpc, timeout}}, erpc(A, call, [B, timer, sleep, [2000], 100])),
    ?assertEqual({error, {erpc, timeout}}, erpc(A, call, [B, timer, sleep, [2000], [{timeout, 100}, {channel, data}]])),
    ?assertEqual({error, {erpc, noconnection}}, erpc(A, call, ['nobody@127.0.0.1', erlang, node, [], 5000])).

erpc_node_killed(Config) ->
    A = proplists:get_value(a, Config),
    {_, Victim} = partisan_otp_ct:start_victim(rpc_victim, Config),
    rpc(A, partisan_otp_ct, async, [{?MODULE, outcome, [call, [Victim, ?MODULE, sleep_then, [30000, late]]]}, result, self()]),
    wait(fun() -> rpc(Victim, erlang, whereis, [rpc_sleeper]) =/= undefined end),
    ok = partisan_ct:kill_node(Victim),
    ?assertEqual({ok, {error, {erpc, noconnection}}}, recv(result)).

erpc_multicall_and_casts(Config) ->
    {A, B} = ab(Config),
    Down = 'nobody@127.0.0.1',
    ?assertEqual([{ok, A}, {ok, B}, {error, {erpc, noconnection}}],
                 rpc(A, partisan_erpc, multicall, [[A, B, Down], erlang, node, [], 5000])),
    ?assertEqual([{throw, t}, {throw, t}], rpc(A, partisan_erpc, multicall, [[B, A], ?MODULE, raise, [throw, t]])),
    ?assertEqual([{exit, {exception, e}}], rpc(A, partisan_erpc, multicall, [[B], ?MODULE, raise, [exit, e]])),
    ?assertMatch([{error, {exception, r, [_ | _]}}], rpc(A, partisan_erpc, multicall, [[B], ?MODULE, raise, [error, r]])),
    ?assertEqual([{error, {erpc, timeout}}], rpc(A, partisan_erpc, multicall, [[B], timer, sleep, [2000], 100])),
    Self = self(),
    ok = rpc(A, partisan_erpc, cast, [B, ?MODULE, notify, [Self, cast]]),
    ?assertEqual(B, recv(cast)),
    ok = rpc(A, partisan_erpc, cast, [B, fun() -> Self ! {fun_cast, node()} end]),
    ?assertEqual(B, recv(fun_cast)),
    ok = rpc(A, partisan_erpc, multicast, [[A, B], ?MODULE, notify, [Self, multicast]]),
    ?assertEqual(lists:sort([A, B]), lists:sort([recv(multicast), recv(multicast)])),
    ok = rpc(A, partisan_erpc, cast, [Down, erlang, node, []]).

erpc_requests(Config) ->
    {A, B} = ab(Config),
    Run = fun(Body) -> rpc(A, erlang, apply, [Body, []]) end,
    ?assertEqual(B, Run(fun() -> partisan_erpc:receive_response(partisan_erpc:send_request(B, erlang, node, []), 5000) end)),
    ?assertEqual({no_response, {response, done}}, Run(fun() ->
        R = partisan_erpc:send_request(B, ?MODULE, sleep_then, [200, done]),
        {partisan_erpc:wait_response(R, 0), partisan_erpc:wait_response(R, 5000)} end)),
    ?assertEqual({response, B}, Run(fun() ->
        R = partisan_erpc:send_request(B, fun() -> node() end),
        receive Msg -> partisan_erpc:check_response(Msg, R) after 5000 -> none end end)),
    ?assertEqual({timeout_raised, []}, Run(fun() ->
        R = partisan_erpc:send_request(B, ?MODULE, sleep_then, [300, done]),
        T = try partisan_erpc:receive_response(R, 10) catch error:{erpc, timeout} -> timeout_raised end,
        timer:sleep(800),
        {T, element(2, process_info(self(), messages))} end)).

rpc_call(Config) ->
    {A, B} = ab(Config),
    ?assertEqual(B, rpc(A, partisan_rpc, call, [B, erlang, node, []])),
    ?assertEqual(B, rpc(A, partisan_rpc, call, [B, erlang, node, [], [{timeout, 5000}, {channel, data}]])),
    ?assertEqual(x, rpc(A, partisan_rpc, call, [B, ?MODULE, raise, [throw, x], 5000])),
    ?assertEqual({badrpc, {'EXIT', gone}}, rpc(A, partisan_rpc, call, [B, ?MODULE, raise, [exit, gone], 5000])),
    ?assertMatch({badrpc, {'EXIT', {bad, [_ | _]}}}, rpc(A, partisan_rpc, call, [B, ?MODULE, raise, [error, bad]])),
    ?assertEqual({badrpc, timeout}, rpc(A, partisan_rpc, call, [B, timer, sleep, [2000], 100])),
    ?assertEqual({badrpc, nodedown}, rpc(A, partisan_rpc, call, ['nobody@127.0.0.1', erlang, node, [], 5000])),
    ?assertEqual({[B, A], ['nobody@127.0.0.1']},
                 rpc(A, partisan_rpc, multicall, [[B, 'nobody@127.0.0.1', A], erlang, node, [], 5000])),
    ?assertEqual(true, rpc(A, partisan_rpc, cast, [B, erlang, node, []])),
    ?assertEqual(#{channel => undefined, timeout => 5}, rpc(A, partisan_rpc, prepare_opts, [[{timeout, 5}]])).

never_disterl(Config) ->
    {A, B} = ab(Config),
    B = erpc(A, call, [B, erlang, node, []]),
    %% The peers only know the test node over Distributed Erlang.
    ?assertEqual([node()], rpc(A, erlang, nodes, [])),
    ?assertEqual([node()], rpc(B, erlang, nodes, [])).

%% -- helpers --------------------------------------------------------------------------


%% partisan_erpc:F(Args) on `Node': the value, `{thrown, V}', or `{Class, Reason}'.
erpc(Node, F, Args) -> rpc(Node, ?MODULE, outcome, [F, Args]).

outcome(F, Args) ->
    try erlang:apply(partisan_erpc, F, Args)
    catch throw:V -> {thrown, V}; C:R -> {C, R}
    end.


raise(throw, V) -> throw(V);
raise(exit, R) -> exit(R);
raise(error, R) -> error(R).

sleep_then(Ms, Value) ->
    register(rpc_sleeper, self()),
    timer:sleep(Ms),
    Value.

notify(To, Tag) -> To ! {Tag, node()}, ok.
