%% @doc Ping-pong round trip of a 10-byte binary between two BEAM nodes, partisan vs Distributed
%% Erlang, with the peers' default scheduler flags, with `+sbwt none' (scheduler busy-wait off)
%% and with `+IOs false' (schedulers never sleep in the BEAM's poll set: a process woken by a
%% partisan reader thread then no longer waits on a poll interrupt, see the README).
%%
%% A pinger on A sends `{ping, Self, Bin}' to an echo process on B, which answers `{pong, Bin}'
%% over the same transport; the next ping leaves when the pong arrived. Each round trip is timed
%% on A with `erlang:monotonic_time/0'. Runs of `BENCH_LAT_PINGS' pings (after 200 warm-up
%% pings), `BENCH_REPS' repetitions interleaved over the transports; p50 and p99 per run, the
%% report gives the median of the runs and their min–max.
%%
%% The ping/echo/bulk functions here also serve `bench_hol' and `bench_smoke'.
-module(bench_latency).

-export([main/0]).
%% Run on the peers.
-export([spawn_echo/2, ping_run/5, stop/1]).
%% Shared with other scenarios.
-export([setup_pair/4, setup_pair/5, teardown_pair/1, summarize/1, wire/2]).

-import(bench_common, [env_int/2, env_str/2, median/1, percentile/2, fmt_us/1]).

-define(RPC_TIMEOUT, 15000).

main() ->
    Pings = env_int("BENCH_LAT_PINGS", 10000),
    Reps = env_int("BENCH_REPS", 3),
    Variants = variants(),
    Max = env_int("BENCH_MAX_TOTAL_MS", 60000 + length(Variants) * Reps * 2 * (Pings div 5 + 2000)),
    bench_common:main("latency", {Max, fun(W) -> run(W, Pings, Reps, Variants) end}).

%% BENCH_LAT_FLAGS: `;'-separated sets of extra peer flags; "" is the defaults.
variants() ->
    case os:getenv("BENCH_LAT_FLAGS") of
        false -> [{"default flags", []}, {"+sbwt none", ["+sbwt", "none"]}, {"+IOs false", ["+IOs", "false"]}];
        V -> [{case F of "" -> "default flags"; _ -> F end, string:lexemes(F, " ")}
              || F <- string:split(V, ";", all)]
    end.

run(W, Pings, Reps, Variants) ->
    Started = erlang:system_time(second),
    Results = [begin
                   io:format("peers with ~ts~n", [Label]),
                   Pair = setup_pair(W, "lat", Flags, #{ping => #{parallelism => 1}}),
                   try
                       {Label, Pair, measure(Pair, Pings, Reps)}
                   after
                       teardown_pair(Pair)
                   end
               end || {Label, Flags} <- Variants],
    Env = bench_common:environment("Partisan data plane vs Distributed Erlang: ping-pong latency (10 B)",
                                   Started, [{L, maps:get(info_a, P), maps:get(args, P)}
                                             || {L, P, _} <- Results]),
    Rows = [[row(Label, T, maps:get(T, R), maps:get(disterl, R)) || T <- [{partisan, ping}, disterl]]
            || {Label, _, R} <- Results],
    Foreign = lists:append([maps:get(foreign, R) || {_, _, R} <- Results]),
    Report0 = [Env,
               io_lib:format("- method: closed-loop ping-pong, ~b round trips per run after 200 "
                             "warm-up ones, ~b repetitions interleaved over the transports; "
                             "partisan on a channel `ping` (parallelism 1)~n~n", [Pings, Reps]),
               "## Round trip of a 10-byte message\n\n"
               "Median over the runs of each run's p50 / p99 (min–max of the runs). "
               "Ratio = disterl / partisan (above 1: partisan is faster).\n\n"
               "| peer flags | transport | p50 | p99 | mean | p50 disterl/partisan | p99 disterl/partisan |\n"
               "|---|---|---:|---:|---:|---:|---:|\n", Rows, "\n",
               bench_common:noise_note(Foreign)],
    Base = bench_common:write_report("latency", Report0),
    Data = [["# variant p50_partisan p99_partisan p50_disterl p99_disterl\n"],
            [[io_lib:format("\"~ts\" ~.1f ~.1f ~.1f ~.1f~n",
                            [L, med(R, {partisan, ping}, p50), med(R, {partisan, ping}, p99),
                             med(R, disterl, p50), med(R, disterl, p99)])] || {L, _, R} <- Results]],
    Plot = bench_common:plot(Base, Data,
        "set title 'Ping-pong round trip, 10 B (median of runs)'\n"
        "set style data histograms\nset style histogram clustered gap 1\n"
        "set style fill solid 0.8 border -1\nset ylabel 'µs'\nset key top left\nset grid ytics\n"
        "plot '@DAT@' using 2:xtic(1) title 'partisan p50', '' using 3 title 'partisan p99', "
        "'' using 4 title 'disterl p50', '' using 5 title 'disterl p99'"),
    ok = bench_common:finish_report(Base, Report0, Plot),
    ok.

med(R, T, K) -> median([maps:get(K, S) || S <- maps:get(T, R)]).

row(Label, T, Ss, Dist) ->
    Cell = fun(K) ->
                   Vs = [maps:get(K, S) || S <- Ss],
                   io_lib:format("~ts (~ts–~ts)", [fmt_us(median(Vs)), fmt_us(lists:min(Vs)),
                                                   fmt_us(lists:max(Vs))])
           end,
    Ratio = fun(K) ->
                    case T of
                        disterl -> "-";
                        _ -> io_lib:format("~.2f", [median([maps:get(K, S) || S <- Dist]) /
                                                    median([maps:get(K, S) || S <- Ss])])
                    end
            end,
    ["| ", Label, " | ", label(T), " | ", Cell(p50), " | ", Cell(p99), " | ",
     fmt_us(median([maps:get(mean, S) || S <- Ss])), " | ", Ratio(p50), " | ", Ratio(p99), " |\n"].

label(disterl) -> "disterl";
label({partisan, C}) -> io_lib:format("partisan (channel ~p)", [C]).

measure(#{a := A, b := B, pid_a := PA, pid_b := PB}, Pings, Reps) ->
    Ts = [{partisan, ping}, disterl],
    Runs = [{Rep, T} || Rep <- lists:seq(1, Reps), T <- Ts],
    Res = [begin
               Wire = wire(T, ping),
               Echo = erpc:call(B, ?MODULE, spawn_echo, [Wire, 60000]),
               C0 = bench_common:cpu_begin([PA, PB]),
               Rtts = erpc:call(A, ?MODULE, ping_run, [Wire, Echo, 10, Pings, 30000], 60000),
               Cpu = bench_common:cpu_end(C0),
               erpc:call(B, ?MODULE, stop, [Echo]),
               S = summarize(Rtts),
               io:format("  rep ~b ~-22ts p50 ~ts  p99 ~ts~n",
                         [Rep, label(T), fmt_us(maps:get(p50, S)), fmt_us(maps:get(p99, S))]),
               {T, S, maps:get(foreign, Cpu)}
           end || {Rep, T} <- Runs],
    M = maps:from_list([{T, [S || {T1, S, _} <- Res, T1 =:= T]} || T <- Ts]),
    M#{foreign => [F || {_, _, F} <- Res]}.

wire(disterl, _) -> disterl;
wire({partisan, C}, _) -> {partisan, #{channel => C}};
wire(partisan, C) -> {partisan, #{channel => C}}.

%% @doc p50, p99, mean, max of a list of round trips (µs).
summarize(Rtts) ->
    #{p50 => percentile(Rtts, 50), p99 => percentile(Rtts, 99), mean => bench_common:mean(Rtts),
      max => lists:max(Rtts), n => length(Rtts)}.

%% -- a pair of peers ----------------------------------------------------------------------------

%% @doc Starts peers A and B with extra `Flags', partisan with `Channels' on both, joins them
%% (fully connected both ways) and connects them over disterl.
setup_pair(W, Prefix, Flags, Channels) ->
    setup_pair(W, Prefix, Flags, Channels, #{}).

%% @doc `setup_pair/4' with more partisan config on both peers (e.g. another overlay).
setup_pair(W, Prefix, Flags, Channels, Env) ->
    Args = bench_common:peer_args(Flags),
    Tag = os:getpid(),
    {PeerA, A} = bench_common:start_peer(W, Prefix ++ "_a_" ++ Tag, Args),
    {PeerB, B} = bench_common:start_peer(W, Prefix ++ "_b_" ++ Tag, Args),
    _SpecA = bench_common:start_partisan(A, Env#{channels => Channels}),
    SpecB = bench_common:start_partisan(B, Env#{channels => Channels}),
    ok = bench_common:join_partisan(A, {B, SpecB}),
    true = erpc:call(A, net_kernel, connect_node, [B], ?RPC_TIMEOUT),
    #{a => A, b => B, peers => [PeerA, PeerB], args => Args,
      info_a => erpc:call(A, bench_common, node_info, []),
      pid_a => bench_common:os_pid(A), pid_b => bench_common:os_pid(B)}.

teardown_pair(#{peers := Peers}) ->
    [bench_common:stop_peer(P) || P <- Peers],
    ok.

%% -- on the peers -------------------------------------------------------------------------------

send(disterl, Dest, Msg) -> Dest ! Msg, ok;
send({partisan, Opts}, Dest, Msg) -> partisan:forward_message(Dest, Msg, Opts).

%% @doc An echo process: answers `{ping, From, Bin}' with `{pong, Bin}' over `Wire'. Ends on
%% `stop' or after `MaxMs' without a message.
spawn_echo(Wire, MaxMs) ->
    spawn(fun() -> echo_loop(Wire, MaxMs) end).

echo_loop(Wire, MaxMs) ->
    receive
        {ping, From, Bin} ->
            ok = send(Wire, From, {pong, Bin}),
            echo_loop(Wire, MaxMs);
        stop -> ok
    after MaxMs -> ok
    end.

stop(Pid) -> Pid ! stop, ok.

%% @doc `N' timed round trips of a `Size'-byte binary to `Echo' (after 200 untimed ones); stops
%% early after `MaxMs'. Returns the round trips in µs.
ping_run(Wire, Echo, Size, N, MaxMs) ->
    Bin = binary:copy(<<"p">>, Size),
    Deadline = erlang:monotonic_time(millisecond) + MaxMs,
    _ = ping_loop(Wire, Echo, Bin, 200, Deadline, []),
    ping_loop(Wire, Echo, Bin, N, Deadline, []).

ping_loop(_, _, _, 0, _, Acc) -> Acc;
ping_loop(Wire, Echo, Bin, N, Deadline, Acc) ->
    T0 = erlang:monotonic_time(),
    ok = send(Wire, Echo, {ping, self(), Bin}),
    receive
        {pong, _} ->
            Us = erlang:convert_time_unit(erlang:monotonic_time() - T0, native, nanosecond) / 1000,
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> [Us | Acc];
                false -> ping_loop(Wire, Echo, Bin, N - 1, Deadline, [Us | Acc])
            end
    after 5000 ->
        error({pong_timeout, N})
    end.
