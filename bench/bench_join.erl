%% @doc Join time: from `partisan_peer_service:join/1' to fully connected (every channel ×
%% parallelism connection up, `partisan:is_fully_connected/1' true on every node for every other
%% node), for 2 and 8 nodes; beside it, disterl's full mesh (`net_kernel:connect_node/1' from
%% every node to every other, until `nodes()' lists them all).
%%
%% All joiners (nodes 2..N) call `join(Spec1)' at the same wall-clock instant; node 1 does not
%% call anything. Every node polls its connectivity every millisecond and reports when it is
%% complete; join time = the latest report − the start instant (`os:system_time/1': one clock
%% for all VMs on the machine). Partisan is restarted between repetitions (fresh membership);
%% disterl connections are dropped between repetitions.
-module(bench_join).

-export([main/0]).
-export([join_and_watch/5, disterl_and_watch/3, disconnect_all/1]).

-import(bench_common, [env_int/2, env_ints/2, median/1]).

main() ->
    Ns = env_ints("BENCH_JOIN_NODES", [2, 8]),
    Reps = env_int("BENCH_REPS", 5),
    Par = env_int("BENCH_JOIN_PARALLELISM", 4),
    Max = env_int("BENCH_MAX_TOTAL_MS", 60000 + lists:sum(Ns) * 4000 + length(Ns) * Reps * 6000),
    bench_common:main("join", {Max, fun(W) -> run(W, Ns, Reps, Par) end}).

run(W, Ns, Reps, Par) ->
    Started = erlang:system_time(second),
    Args = bench_common:peer_args([]),
    Channels = #{data => #{parallelism => Par}},
    Res = [begin
               Tag = os:getpid(),
               Peers = [bench_common:start_peer(W, "join" ++ integer_to_list(N) ++ "_" ++
                                                       integer_to_list(I) ++ "_" ++ Tag, Args)
                        || I <- lists:seq(1, N)],
               Nodes = [Nd || {_, Nd} <- Peers],
               try
                   Info = erpc:call(hd(Nodes), bench_common, node_info, []),
                   Rs = [begin
                             P = partisan_rep(Nodes, Channels),
                             D = disterl_rep(Nodes),
                             io:format("  ~b nodes rep ~b: partisan ~.1f ms, disterl ~.1f ms~n", [N, Rep, P, D]),
                             {P, D}
                         end || Rep <- lists:seq(1, Reps)],
                   {N, Info, Rs}
               after
                   [bench_common:stop_peer(Pr) || {Pr, _} <- Peers]
               end
           end || N <- Ns],
    {_, Info0, _} = hd(Res),
    Cell = fun(L) -> io_lib:format("~.1f (~.1f–~.1f)", [median(L), lists:min(L), lists:max(L)]) end,
    Rows = [begin
                Ps = [P || {P, _} <- Rs], Ds = [D || {_, D} <- Rs],
                io_lib:format("| ~b | ~b | ~ts | ~ts | ~.2f |~n",
                              [N, (N * (N - 1)) * (Par + 2), Cell(Ps), Cell(Ds), median(Ps) / median(Ds)])
            end || {N, _, Rs} <- Res],
    Env = bench_common:environment("Join time: partisan full mesh vs disterl full mesh", Started,
                                   [{"", Info0, Args}]),
    Report0 = [Env,
               io_lib:format("- partisan channels: `~0p` + the default and membership channels: "
                             "~b connections per ordered pair of nodes; ~b repetitions; poll interval 1 ms~n~n",
                             [Channels, Par + 2, Reps]),
               "## Time to a fully connected cluster (ms)\n\n"
               "Median (min–max). Partisan: all joiners call `join(Spec1)` at once, until every node is "
               "fully connected to every other; disterl: every node connects to every other at once.\n\n"
               "| nodes | partisan connections (all nodes) | partisan ms | disterl ms | partisan / disterl |\n"
               "|---:|---:|---:|---:|---:|\n", Rows, "\n"],
    Base = bench_common:write_report("join", Report0),
    Data = ["# nodes partisan disterl\n",
            [io_lib:format("~b ~.2f ~.2f~n", [N, median([P || {P, _} <- Rs]), median([D || {_, D} <- Rs])])
             || {N, _, Rs} <- Res]],
    Plot = bench_common:plot(Base, Data,
        "set title 'Time to a fully connected cluster (median)'\n"
        "set style data histograms\nset style histogram clustered gap 1\n"
        "set style fill solid 0.8 border -1\nset ylabel 'ms'\nset xlabel 'nodes'\nset key top left\n"
        "set grid ytics\nplot '@DAT@' using 2:xtic(1) title 'partisan', '' using 3 title 'disterl'"),
    ok = bench_common:finish_report(Base, Report0, Plot),
    ok.

partisan_rep([N1 | _] = Nodes, Channels) ->
    Specs = [{N, bench_common:start_partisan(N, #{channels => Channels})} || N <- Nodes],
    {_, Spec1} = hd(Specs),
    StartAt = os:system_time(microsecond) + 300000,
    Done = erpc:multicall(Nodes, ?MODULE, join_and_watch,
                          [N1, Spec1, Nodes, StartAt, 20000], 30000),
    [ok = erpc:call(N, application, stop, [partisan], 15000) || N <- Nodes],
    elapsed(Done, StartAt).

disterl_rep(Nodes) ->
    StartAt = os:system_time(microsecond) + 300000,
    Done = erpc:multicall(Nodes, ?MODULE, disterl_and_watch, [Nodes, StartAt, 20000], 30000),
    _ = erpc:multicall(Nodes, ?MODULE, disconnect_all, [Nodes], 15000),
    elapsed(Done, StartAt).

elapsed(Done, StartAt) ->
    Ts = [case D of {ok, {ok, T}} -> T; Other -> error({join_failed, Other}) end || D <- Done],
    (lists:max(Ts) - StartAt) / 1000.

%% -- on the peers -------------------------------------------------------------------------------

wait_until(T) ->
    case T - os:system_time(microsecond) of
        D when D > 2000 -> receive after (D - 1000) div 1000 -> wait_until(T) end;
        D when D > 0 -> erlang:yield(), wait_until(T);
        _ -> ok
    end.

%% @doc At `StartAt', joins `Spec1' (unless this is `N1'), then waits until fully connected to
%% every other node; returns `{ok, SystemTimeUs}' of that moment.
join_and_watch(N1, Spec1, Nodes, StartAt, Ms) ->
    wait_until(StartAt),
    case node() of
        N1 -> ok;
        _ -> ok = partisan_peer_service:join(Spec1)
    end,
    ok = bench_common:wait_fully_connected_all(Nodes -- [node()], Ms),
    {ok, os:system_time(microsecond)}.

disterl_and_watch(Nodes, StartAt, Ms) ->
    wait_until(StartAt),
    Others = Nodes -- [node()],
    [spawn(fun() -> net_kernel:connect_node(N) end) || N <- Others],
    Deadline = erlang:monotonic_time(millisecond) + Ms,
    watch_disterl(Others, Deadline).

watch_disterl(Others, Deadline) ->
    case Others -- nodes() of
        [] -> {ok, os:system_time(microsecond)};
        _ ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> {error, timeout};
                false -> receive after 1 -> watch_disterl(Others, Deadline) end
            end
    end.

disconnect_all(Nodes) ->
    [erlang:disconnect_node(N) || N <- Nodes, N =/= node()],
    ok.
