%% @doc Physical limits of the machine, for the other reports: loopback TCP bandwidth measured by
%% iperf3 (1 and 8 parallel streams) and the in-process rates of `term_to_binary/1' and
%% `binary_to_term/1' on the benchmarks' payloads (a binary of the given size inside a tuple,
%% as the benchmarks send it). Every message a transport moves costs at least one encode and one
%% decode (disterl and partisan alike) and one trip through the loopback.
-module(bench_limits).

-export([main/0]).

-import(bench_common, [env_int/2, env_ints/2, median/1, size_label/1, fmt_rate/1]).

main() ->
    bench_common:main("limits", {env_int("BENCH_MAX_TOTAL_MS", 90000), fun run/1}).

run(W) ->
    Started = erlang:system_time(second),
    Secs = env_int("BENCH_IPERF_SECONDS", 3),
    C0 = bench_common:cpu_begin([]),
    Iperf = [{S, iperf(W, S, Secs)} || S <- env_ints("BENCH_IPERF_STREAMS", [1, 8])],
    Etf = [{P, etf(P)} || P <- env_ints("BENCH_PAYLOADS", [10, 1024, 65536, 1048576, 8388608])],
    Cpu = bench_common:cpu_end(C0),
    Info = bench_common:node_info(),
    Env = bench_common:environment("Physical limits: loopback TCP and the term codec", Started,
                                   [{"this controller VM (codec rates)", Info, []}]),
    IperfRows = [case R of
                     {ok, Gbit} -> io_lib:format("| ~b | ~.2f | ~b |~n", [S, Gbit, round(Gbit * 1000 / 8)]);
                     {skipped, Why} -> io_lib:format("| ~b | skipped: ~ts | - |~n", [S, Why])
                 end || {S, R} <- Iperf],
    EtfRows = [io_lib:format("| ~ts | ~ts | ~b | ~ts | ~b |~n",
                             [size_label(P), fmt_rate(Enc), round(Enc * P / 1.0e6), fmt_rate(Dec),
                              round(Dec * P / 1.0e6)])
               || {P, {Enc, Dec}} <- Etf],
    Report0 = [Env,
               "## Loopback TCP bandwidth (iperf3)\n\n",
               io_lib:format("`iperf3 -c 127.0.0.1 -t ~b -P streams`, receiver side.~n~n", [Secs]),
               "| streams | Gbit/s | MB/s |\n|---:|---:|---:|\n", IperfRows, "\n",
               "## Term codec in one process\n\n"
               "`term_to_binary({msg, self(), Bin})` and `binary_to_term/1` of the result, on one "
               "scheduler of the controller VM; best of 3 runs of ~200 ms each.\n\n"
               "| payload | encode ops/s | encode MB/s | decode ops/s | decode MB/s |\n"
               "|---|---:|---:|---:|---:|\n", EtfRows, "\n",
               io_lib:format("CPU used by other processes during this run: ~b % of one core "
                             "(iperf3 itself included).~n~n", [round(maps:get(foreign, Cpu))])],
    Base = bench_common:write_report("limits", Report0),
    Data = ["# payload encode_MBs decode_MBs\n",
            [io_lib:format("\"~ts\" ~.1f ~.1f~n", [size_label(P), Enc * P / 1.0e6, Dec * P / 1.0e6])
             || {P, {Enc, Dec}} <- Etf]],
    Plot = bench_common:plot(Base, Data,
        "set title 'term_to_binary / binary_to_term in one process'\n"
        "set style data histograms\nset style histogram clustered gap 1\n"
        "set style fill solid 0.8 border -1\nset logscale y\nset ylabel 'MB/s (log)'\nset key top left\n"
        "set grid ytics\nplot '@DAT@' using 2:xtic(1) title 'encode', '' using 3 title 'decode'"),
    ok = bench_common:finish_report(Base, Report0, Plot),
    ok.

%% One iperf3 server (one test, `-1') and one client; returns {ok, Gbit/s} of the receiver.
iperf(W, Streams, Secs) ->
    case os:find_executable("iperf3") of
        false -> {skipped, "iperf3 is not installed"};
        Exe ->
            Port = bench_common:free_port(),
            Srv = open_port({spawn_executable, Exe},
                            [{args, ["-s", "-1", "-p", integer_to_list(Port)]}, exit_status, stderr_to_stdout]),
            {os_pid, OsPid} = erlang:port_info(Srv, os_pid),
            W ! {proxy, OsPid},
            receive after 300 -> ok end,
            Out = os:cmd(io_lib:format("timeout ~b ~ts -c 127.0.0.1 -p ~b -t ~b -P ~b -f m 2>&1",
                                       [Secs + 10, Exe, Port, Secs, Streams])),
            catch port_close(Srv),
            _ = os:cmd("kill " ++ integer_to_list(OsPid) ++ " 2>/dev/null"),
            W ! {proxy_done, OsPid},
            Lines = [L || L <- string:split(Out, "\n", all), string:find(L, "receiver") =/= nomatch],
            Line = case [L || L <- Lines, string:find(L, "SUM") =/= nomatch] of
                [S | _] -> S;
                [] -> case Lines of [L | _] -> L; [] -> "" end
            end,
            case re:run(Line, "([0-9.]+) Mbits/sec", [{capture, all_but_first, list}]) of
                {match, [M]} -> {ok, list_to_float(ensure_float(M)) / 1000};
                _ -> {skipped, "could not parse iperf3 output: " ++ string:slice(string:trim(Out), 0, 200)}
            end
    end.

ensure_float(M) ->
    case lists:member($., M) of true -> M; false -> M ++ ".0" end.

%% Best of 3 runs of ~200 ms: {encodes/s, decodes/s}.
etf(Size) ->
    Term = {msg, self(), binary:copy(<<"x">>, Size)},
    Bin = term_to_binary(Term),
    Enc = lists:max([rate(fun() -> term_to_binary(Term) end) || _ <- lists:seq(1, 3)]),
    Dec = lists:max([rate(fun() -> binary_to_term(Bin) end) || _ <- lists:seq(1, 3)]),
    {Enc, Dec}.

rate(F) ->
    T0 = erlang:monotonic_time(microsecond),
    rate(F, T0, T0 + 200000, 0).

rate(F, T0, End, N) ->
    _ = [F() || _ <- lists:seq(1, 10)],
    T = erlang:monotonic_time(microsecond),
    case T >= End of
        true -> (N + 10) / ((T - T0) / 1.0e6);
        false -> rate(F, T0, End, N + 10)
    end.
