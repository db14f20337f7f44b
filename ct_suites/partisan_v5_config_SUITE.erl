%% A node started from a Partisan v5 sys.config holding every v5 configuration key: it starts,
%% logs one warning naming the keys this release does not implement, runs with the ones it
%% does, and exchanges messages with a node configured the usual way.
-module(partisan_v5_config_SUITE).

-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1]).
-export([starts_from_a_v5_sys_config/1]).
%% A logger handler, on the peer.
-export([log/2]).

-define(TIMEOUT, 10000).
-define(LOGS, {?MODULE, logs}).

all() -> [starts_from_a_v5_sys_config].

init_per_suite(Config) -> Config.

end_per_suite(_Config) -> ok.

starts_from_a_v5_sys_config(Config) ->
    Dir = proplists:get_value(priv_dir, Config),
    Node = 'v5_config@127.0.0.1',
    Env = maps:to_list((partisan_config_tests:v5_env())#{name => Node}),
    File = filename:join(Dir, "sys.config"),
    ok = file:write_file(File, io_lib:format("~p.~n", [[{partisan, lists:sort(Env)}]])),
    Paths = [filename:dirname(code:which(M)) || M <- [partisan, ?MODULE, partisan_config_tests]],
    {ok, Pid, Node} = peer:start(#{name => v5_config, host => "127.0.0.1", longnames => true,
                                   args => ["-connect_all", "false", "-config", File, "-pa" | Paths]}),
    {ok, {PlainPid, Plain}} =
        partisan_ct:start_node(v5_plain, #{channels => [data, {monotonic, state}]}),
    try
        ok = rpc(Node, logger, add_handler, [v5_warnings, ?MODULE, #{level => warning}]),
        ?assertMatch({ok, _}, rpc(Node, application, ensure_all_started, [partisan])),
        %% One warning, naming every key accepted without being implemented.
        Logs = rpc(Node, persistent_term, get, [?LOGS, []]),
        [Warning] = [L || L <- Logs, string:find(L, "Partisan v5 keys") =/= nomatch],
        [?assertNotEqual(nomatch, string:find(Warning, io_lib:format("~p", [K])))
         || {K, {ignored, _}} <- partisan_config:v5_keys()],
        %% The keys implemented took effect.
        ?assertEqual([a, b], rpc(Node, partisan_config, get, [causal_labels])),
        ?assertMatch(#{active_rwl := 6}, rpc(Node, partisan_config, get, [hyparview])),
        ?assertMatch(#{state := #{monotonic := true}}, rpc(Node, partisan_config, channels, [])),
        ?assertMatch([#{ip := {127, 0, 0, 1}, port := P}] when P > 0,
                     maps:get(listen_addrs, rpc(Node, partisan, node_spec, []))),
        %% And it is a working node.
        ok = partisan_ct:join_all([Plain, Node]),
        ok = partisan_ct:check_delivery(Node, Plain, data, ?TIMEOUT),
        ok = partisan_ct:check_delivery(Plain, Node, data, ?TIMEOUT)
    after
        partisan_ct:stop_cluster([{Pid, Node}, {PlainPid, Plain}])
    end.

%% @doc Logger handler (on the peer): keeps each formatted message, synchronously, so a call
%% made after the start returned sees every warning logged during it.
-spec log(logger:log_event(), logger:handler_config()) -> ok.
log(#{msg := Msg}, _Config) ->
    Text = case Msg of
        {string, S} -> unicode:characters_to_list(S);
        {report, R} -> lists:flatten(io_lib:format("~p", [R]));
        {Fmt, Args} -> lists:flatten(io_lib:format(Fmt, Args))
    end,
    persistent_term:put(?LOGS, [Text | persistent_term:get(?LOGS, [])]).

rpc(Node, M, F, A) -> partisan_ct:rpc(Node, M, F, A).
