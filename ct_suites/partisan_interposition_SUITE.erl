%% Interposition (v5's fault-injection API) across real nodes: funs that drop, delay, duplicate
%% and rewrite messages on the sending and on the receiving side, pre and post funs, the API on
%% every manager module, a fun that raises, and the `ingress_delay' / `egress_delay' keys.
-module(partisan_interposition_SUITE).

-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, init_per_suite/1, end_per_suite/1, init_per_group/2,
         end_per_group/2, end_per_testcase/2]).
-export([api_on_manager_modules/1, drop_on_send/1, drop_on_receive/1, rewrite_both_sides/1,
         duplicate_on_receive/1, delay_reorders_on_receive/1, delay_on_send/1,
         pre_and_post_funs/1, raising_fun_passes_message/1, ingress_and_egress_delay/1]).
%% Run on peers.
-export([add/2, hold_while_flagged/1]).

-define(ENV, #{connection_interval => 100, connection_jitter => 100}).
-define(TIMEOUT, 10000).
-define(HOLD, {?MODULE, hold}).

all() -> [{group, full_mesh}, {group, hyparview}].

groups() ->
    Cases = [api_on_manager_modules, drop_on_send, drop_on_receive, rewrite_both_sides,
             duplicate_on_receive, delay_reorders_on_receive, delay_on_send, pre_and_post_funs,
             raising_fun_passes_message, ingress_and_egress_delay],
    [{full_mesh, [], Cases}, {hyparview, [], Cases}].

init_per_suite(Config) -> Config.

end_per_suite(_Config) -> ok.

init_per_group(Group, Config0) ->
    Config = [{env, env(Group)} | Config0],
    {ok, Peers} = partisan_ct:start_cluster([ip_a, ip_b], env(Config)),
    [{peers, Peers} | Config].

end_per_group(_Group, Config) ->
    partisan_ct:stop_cluster(proplists:get_value(peers, Config)).

env(Config) when is_list(Config) -> proplists:get_value(env, Config);
env(full_mesh) -> ?ENV;
env(hyparview) -> ?ENV#{peer_service_manager => partisan_hyparview_peer_service_manager}.

%% Every test leaves no fun installed behind it.
end_per_testcase(_Case, Config) ->
    [begin
         {ok, Funs} = rpc(N, partisan_interposition, F, []),
         [ok = rpc(N, partisan_interposition, R, [Name]) || Name <- maps:keys(Funs)]
     end || N <- cluster(Config),
            {F, R} <- [{get_pre_interposition_funs, remove_pre_interposition_fun},
                       {get_interposition_funs, remove_interposition_fun},
                       {get_post_interposition_funs, remove_post_interposition_fun}]],
    ok.

%% -- tests --------------------------------------------------------------------

api_on_manager_modules(Config) ->
    [A, _] = cluster(Config),
    Manager = rpc(A, partisan_peer_service, manager, []),
    ?assertEqual(maps:get(peer_service_manager, env(Config), partisan_pluggable_peer_service_manager),
                 Manager),
    Id = fun(X) -> X end,
    ?assertEqual(ok, rpc(A, Manager, add_interposition_fun, [one, Id])),
    ?assertEqual(ok, rpc(A, Manager, add_pre_interposition_fun, [two, Id])),
    ?assertEqual(ok, rpc(A, Manager, add_post_interposition_fun, [three, Id])),
    ?assertMatch({ok, #{one := _}}, rpc(A, Manager, get_interposition_funs, [])),
    ?assertMatch({ok, #{two := _}}, rpc(A, Manager, get_pre_interposition_funs, [])),
    ?assertMatch({ok, #{three := _}}, rpc(A, partisan_peer_service_manager,
                                         get_post_interposition_funs, [])),
    ?assertEqual({error, {bad_callback, nofun}},
                 rpc(A, Manager, add_interposition_fun, [bad, nofun])),
    [?assertEqual(ok, rpc(A, M, F, [N]))
     || {M, F, N} <- [{Manager, remove_interposition_fun, one},
                      {partisan_hyparview_peer_service_manager, remove_pre_interposition_fun, two},
                      {partisan_static_peer_service_manager, remove_post_interposition_fun, three},
                      {Manager, remove_interposition_fun, never_installed}]],
    ?assertEqual({ok, #{}}, rpc(A, Manager, get_interposition_funs, [])),
    ?assertEqual(false, rpc(A, partisan_interposition, send_hooks, [])).

%% Without the fun, `drop' would arrive before `marker': the order per sender says it never did.
drop_on_send(Config) ->
    [A, B] = cluster(Config),
    Fwd = rpc(B, partisan_ct, forwarder, [self()]),
    Before = dropped(A),
    install(A, mid, fun({forward_message, _, {drop, _}}) -> undefined; ({_, _, M}) -> M end),
    ?assertEqual(ok, rpc(A, partisan, forward_message, [Fwd, {drop, 1}])),
    ?assertEqual(ok, rpc(A, partisan, forward_message, [Fwd, marker])),
    ?assertEqual({ok, marker}, partisan_ct:recv(Fwd, ?TIMEOUT)),
    ?assertEqual(Before + 1, dropped(A)).

drop_on_receive(Config) ->
    [A, B] = cluster(Config),
    Fwd = rpc(B, partisan_ct, forwarder, [self()]),
    install(B, mid, fun({receive_message, From, {drop, _}}) when From =:= A -> undefined;
                       ({_, _, M}) -> M
                    end),
    ?assertEqual(ok, rpc(A, partisan, forward_message, [Fwd, {drop, 1}])),
    ?assertEqual(ok, rpc(A, partisan, forward_message, [Fwd, marker])),
    ?assertEqual({ok, marker}, partisan_ct:recv(Fwd, ?TIMEOUT)),
    %% The fun gone, the data plane delivers directly again.
    ok = rpc(B, partisan_interposition, remove_interposition_fun, [mid]),
    ?assertEqual(ok, rpc(A, partisan, forward_message, [Fwd, {drop, 2}])),
    ?assertEqual({ok, {drop, 2}}, partisan_ct:recv(Fwd, ?TIMEOUT)).

rewrite_both_sides(Config) ->
    [A, B] = cluster(Config),
    Fwd = rpc(B, partisan_ct, forwarder, [self()]),
    install(A, mid, fun({forward_message, _, {msg, X}}) -> {msg, [sent | X]}; ({_, _, M}) -> M end),
    install(B, mid, fun({receive_message, _, {msg, X}}) -> {msg, [received | X]}; ({_, _, M}) -> M end),
    ?assertEqual(ok, rpc(A, partisan, forward_message, [Fwd, {msg, []}])),
    ?assertEqual({ok, {msg, [received, sent]}}, partisan_ct:recv(Fwd, ?TIMEOUT)),
    ?assert(maps:get(rewritten, rpc(B, partisan_interposition, stats, [])) >= 1).

duplicate_on_receive(Config) ->
    [A, B] = cluster(Config),
    Fwd = rpc(B, partisan_ct, forwarder, [self()]),
    install(B, mid, fun({receive_message, _, {dup, _} = M}) -> {'$duplicate', 3, M};
                       ({_, _, M}) -> M
                    end),
    ?assertEqual(ok, rpc(A, partisan, forward_message, [Fwd, {dup, 1}])),
    ?assertEqual(ok, rpc(A, partisan, forward_message, [Fwd, marker])),
    ?assertEqual([{ok, {dup, 1}}, {ok, {dup, 1}}, {ok, {dup, 1}}, {ok, marker}],
                 [partisan_ct:recv(Fwd, ?TIMEOUT) || _ <- lists:seq(1, 4)]).

%% `slow' is held on B until the test lets it go; `fast', sent after it, overtakes it.
delay_reorders_on_receive(Config) ->
    [A, B] = cluster(Config),
    Fwd = rpc(B, partisan_ct, forwarder, [self()]),
    ok = rpc(B, persistent_term, put, [?HOLD, true]),
    install(B, mid, fun ?MODULE:hold_while_flagged/1),
    ?assertEqual(ok, rpc(A, partisan, forward_message, [Fwd, {held, slow}])),
    ?assertEqual(ok, rpc(A, partisan, forward_message, [Fwd, fast])),
    ?assertEqual({ok, fast}, partisan_ct:recv(Fwd, ?TIMEOUT)),
    ok = rpc(B, persistent_term, put, [?HOLD, false]),
    ?assertEqual({ok, {held, slow}}, partisan_ct:recv(Fwd, ?TIMEOUT)),
    ?assert(maps:get(delayed, rpc(B, partisan_interposition, stats, [])) >= 1).

%% A send-side delay: the send returns `ok' at once and the message goes out later.
delay_on_send(Config) ->
    [A, B] = cluster(Config),
    Fwd = rpc(B, partisan_ct, forwarder, [self()]),
    install(A, mid, fun({forward_message, _, {later, _} = M}) -> {'$delay', 50, M};
                       ({_, _, M}) -> M
                    end),
    ?assertEqual(ok, rpc(A, partisan, forward_message, [Fwd, {later, 1}])),
    ?assertEqual({ok, {later, 1}}, partisan_ct:recv(Fwd, ?TIMEOUT)).

pre_and_post_funs(Config) ->
    [A, B] = cluster(Config),
    Fwd = rpc(B, partisan_ct, forwarder, [self()]),
    Me = self(),
    install(A, pre, fun({Dir, Node, M}) -> Me ! {pre, Dir, Node, M} end),
    install(A, mid, fun({_, _, {msg, X}}) -> {msg, X + 1}; ({_, _, M}) -> M end),
    install(A, post, fun({Dir, Node, Orig, New}) -> Me ! {post, Dir, Node, Orig, New} end),
    ?assertEqual(ok, rpc(A, partisan, forward_message, [Fwd, {msg, 1}])),
    ?assertEqual({ok, {msg, 2}}, partisan_ct:recv(Fwd, ?TIMEOUT)),
    receive {pre, forward_message, B, {msg, 1}} -> ok after ?TIMEOUT -> ct:fail(no_pre) end,
    receive {post, forward_message, B, {msg, 1}, {msg, 2}} -> ok
    after ?TIMEOUT -> ct:fail(no_post)
    end,
    %% On the receiving side, `Node' is the sender.
    install(B, pre, fun({receive_message, Node, M}) -> Me ! {pre_rx, Node, M}; (_) -> ok end),
    ?assertEqual(ok, rpc(A, partisan, forward_message, [Fwd, {msg, 10}])),
    ?assertEqual({ok, {msg, 11}}, partisan_ct:recv(Fwd, ?TIMEOUT)),
    receive {pre_rx, A, {msg, 11}} -> ok after ?TIMEOUT -> ct:fail(no_pre_rx) end.

raising_fun_passes_message(Config) ->
    [A, B] = cluster(Config),
    Fwd = rpc(B, partisan_ct, forwarder, [self()]),
    Errors = maps:get(fun_errors, rpc(B, partisan_interposition, stats, [])),
    install(B, mid, fun({receive_message, _, _}) -> error(boom) end),
    ?assertEqual(ok, rpc(A, partisan, forward_message, [Fwd, survives])),
    ?assertEqual({ok, survives}, partisan_ct:recv(Fwd, ?TIMEOUT)),
    ?assertEqual(Errors + 1, maps:get(fun_errors, rpc(B, partisan_interposition, stats, []))).

%% A third node with both delays joins; a round trip through it takes at least both delays and
%% keeps the order per sender.
ingress_and_egress_delay(Config) ->
    [A, _] = cluster(Config),
    {ok, {Pid, C}} = partisan_ct:start_node(ip_delayed, (env(Config))#{ingress_delay => 100,
                                                             egress_delay => 100}),
    try
        ok = partisan_ct:join_all([A, C]),
        ?assert(rpc(C, partisan_interposition, send_hooks, [])),
        FwdC = rpc(C, partisan_ct, forwarder, [self()]),
        T0 = erlang:monotonic_time(millisecond),
        [ok = rpc(A, partisan, forward_message, [FwdC, N]) || N <- lists:seq(1, 5)],
        ?assertEqual([{ok, N} || N <- lists:seq(1, 5)],
                     [partisan_ct:recv(FwdC, ?TIMEOUT) || _ <- lists:seq(1, 5)]),
        %% A lower bound only: the delay is a minimum, whatever the machine's load.
        ?assert(erlang:monotonic_time(millisecond) - T0 >= 100),
        FwdA = rpc(A, partisan_ct, forwarder, [self()]),
        T1 = erlang:monotonic_time(millisecond),
        ok = rpc(C, partisan, forward_message, [FwdA, from_c]),
        ?assert(erlang:monotonic_time(millisecond) - T1 >= 100),
        ?assertEqual({ok, from_c}, partisan_ct:recv(FwdA, ?TIMEOUT))
    after
        partisan_ct:stop_cluster([{Pid, C}]),
        rpc(A, partisan_peer_service, leave, [C])
    end.

%% -- on peers -------------------------------------------------------------------

%% Installs `Fun' as an interposition fun of `Kind' (`pre', `mid', `post') named `Kind'.
add(Kind, Fun) ->
    F = case Kind of
        pre -> add_pre_interposition_fun;
        mid -> add_interposition_fun;
        post -> add_post_interposition_fun
    end,
    partisan_interposition:F(Kind, Fun).

%% Holds received `{held, _}' messages (re-examined every 10 ms) while the flag is set.
hold_while_flagged({receive_message, _, {held, _} = M}) ->
    case persistent_term:get(?HOLD, false) of
        true -> {'$delay', 10, M};
        false -> M
    end;
hold_while_flagged({_, _, M}) ->
    M.

%% -- helpers --------------------------------------------------------------------

install(Node, Kind, Fun) ->
    ok = rpc(Node, ?MODULE, add, [Kind, Fun]).

dropped(Node) -> maps:get(dropped, rpc(Node, partisan_interposition, stats, [])).

cluster(Config) -> partisan_ct:nodes(proplists:get_value(peers, Config)).

rpc(Node, M, F, A) -> partisan_ct:rpc(Node, M, F, A).
