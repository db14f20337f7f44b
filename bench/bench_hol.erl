%% @doc Head-of-line blocking: the round trip of small (10 B) messages while a bulk stream of
%% 1 MiB messages runs between the same two nodes.
%%
%% Disterl has one connection between two nodes, so a ping waits behind the bulk bytes queued
%% before it. Partisan puts the bulk on its own channel (`bulk', parallelism 1) and the pings on
%% another (`small', parallelism 1): separate TCP connections. Cases, per repetition:
%%   idle (no bulk) and with bulk, for disterl, partisan with separate channels, and partisan with
%%   bulk and pings on the same channel (to show that the channel, not the transport, matters).
%% The bulk sender on A keeps `BENCH_HOL_WINDOW' (default 4) 1 MiB messages unacknowledged; the
%% sink on B acks every message over the same transport and channel. Pings are closed-loop
%% (`bench_latency:ping_run/5') for `BENCH_HOL_MS' (default 2000) per case.
-module(bench_hol).

-export([main/0]).
-export([spawn_sink/2, bulk_start/5, bulk_stop/1]).

-import(bench_common, [env_int/2, median/1, fmt_us/1]).

main() ->
    Reps = env_int("BENCH_REPS", 3),
    Ms = env_int("BENCH_HOL_MS", 2000),
    Max = env_int("BENCH_MAX_TOTAL_MS", 60000 + Reps * 5 * (Ms + 3000)),
    bench_common:main("hol", {Max, fun(W) -> run(W, Reps, Ms) end}).

cases() ->
    [{disterl, idle}, {disterl, bulk},
     {partisan_sep, idle}, {partisan_sep, bulk},
     {partisan_same, bulk}].

label({disterl, idle}) -> "disterl, idle";
label({disterl, bulk}) -> "disterl, with bulk (one connection)";
label({partisan_sep, idle}) -> "partisan, idle";
label({partisan_sep, bulk}) -> "partisan, bulk on its own channel";
label({partisan_same, bulk}) -> "partisan, bulk on the pings' channel".

wires({disterl, _}) -> {disterl, disterl};
wires({partisan_sep, _}) -> {{partisan, #{channel => small}}, {partisan, #{channel => bulk}}};
wires({partisan_same, _}) -> {{partisan, #{channel => bulk}}, {partisan, #{channel => bulk}}}.

run(W, Reps, Ms) ->
    Started = erlang:system_time(second),
    Window = env_int("BENCH_HOL_WINDOW", 4),
    Size = env_int("BENCH_HOL_BULK", 1048576),
    Pair = bench_latency:setup_pair(W, "hol", [],
                                    #{bulk => #{parallelism => 1}, small => #{parallelism => 1}}),
    #{a := A, b := B, pid_a := PA, pid_b := PB} = Pair,
    Res = try
              [begin
                   {PingWire, BulkWire} = wires(Case),
                   Echo = erpc:call(B, bench_latency, spawn_echo, [PingWire, 60000]),
                   Bulk = case Case of
                       {_, bulk} ->
                           Sink = erpc:call(B, ?MODULE, spawn_sink, [BulkWire, 60000]),
                           Snd = erpc:call(A, ?MODULE, bulk_start, [BulkWire, Sink, Size, Window, 60000]),
                           receive after 300 -> ok end,   % the stream is up to speed
                           {Snd, Sink};
                       _ -> none
                   end,
                   C0 = bench_common:cpu_begin([PA, PB]),
                   T0 = erlang:monotonic_time(microsecond),
                   Rtts = erpc:call(A, bench_latency, ping_run, [PingWire, Echo, 10, 100000000, Ms], Ms + 20000),
                   Secs = (erlang:monotonic_time(microsecond) - T0) / 1.0e6,
                   Cpu = bench_common:cpu_end(C0),
                   MBs = case Bulk of
                       none -> 0.0;
                       {S, K} ->
                           Bytes = erpc:call(A, ?MODULE, bulk_stop, [S], 20000),
                           erpc:call(B, bench_latency, stop, [K]),
                           Bytes / Secs / 1.0e6
                   end,
                   erpc:call(B, bench_latency, stop, [Echo]),
                   Sum = (bench_latency:summarize(Rtts))#{bulk_mbs => MBs, foreign => maps:get(foreign, Cpu)},
                   io:format("  rep ~b ~-40ts p50 ~ts p99 ~ts (~b pings) bulk ~b MB/s~n",
                             [Rep, label(Case), fmt_us(maps:get(p50, Sum)), fmt_us(maps:get(p99, Sum)),
                              maps:get(n, Sum), round(MBs)]),
                   {Case, Sum}
               end || Rep <- lists:seq(1, Reps), Case <- cases()]
          after
              bench_latency:teardown_pair(Pair)
          end,
    Med = fun(C, K) -> median([maps:get(K, S) || {C1, S} <- Res, C1 =:= C]) end,
    Cell = fun(C, K) ->
                   Vs = [maps:get(K, S) || {C1, S} <- Res, C1 =:= C],
                   io_lib:format("~ts (~ts–~ts)", [fmt_us(median(Vs)), fmt_us(lists:min(Vs)),
                                                   fmt_us(lists:max(Vs))])
           end,
    Rows = [["| ", label(C), " | ", Cell(C, p50), " | ", Cell(C, p99), " | ",
             bench_common:fmt_int(Med(C, n)), " | ",
             case C of {_, bulk} -> integer_to_list(round(Med(C, bulk_mbs))); _ -> "-" end, " |\n"]
            || C <- cases()],
    R = fun(K) -> Med({disterl, bulk}, K) / Med({partisan_sep, bulk}, K) end,
    Env = bench_common:environment("Head-of-line blocking: small-message latency under a 1 MiB bulk stream",
                                   Started, [{"", maps:get(info_a, Pair), maps:get(args, Pair)}]),
    Report0 = [Env,
               io_lib:format("- partisan channels: `bulk` (parallelism 1) and `small` (parallelism 1); "
                             "bulk: ~ts messages, ~b in flight, acked one by one; pings: 10 B closed loop "
                             "for ~b ms per case; ~b repetitions~n~n",
                             [bench_common:size_label(Size), Window, Ms, Reps]),
               "## Round trip of 10 B pings\n\n"
               "Median over the repetitions (min–max). `pings`: round trips completed per case "
               "(median); bulk: MB/s of the bulk stream during the pings.\n\n"
               "| case | p50 | p99 | pings | bulk MB/s |\n|---|---:|---:|---:|---:|\n", Rows, "\n",
               io_lib:format("With the bulk stream running, disterl's p50 is **~.1f×** and p99 **~.1f×** "
                             "partisan's (bulk on its own channel).~n~n", [R(p50), R(p99)]),
               bench_common:noise_note([maps:get(foreign, S) || {_, S} <- Res])],
    Base = bench_common:write_report("hol", Report0),
    Data = [["# case p50 p99\n"],
            [io_lib:format("\"~ts\" ~.1f ~.1f~n", [label(C), Med(C, p50), Med(C, p99)]) || C <- cases()]],
    Plot = bench_common:plot(Base, Data,
        "set title '10 B round trip with and without a 1 MiB bulk stream'\n"
        "set style data histograms\nset style histogram clustered gap 1\n"
        "set style fill solid 0.8 border -1\nset logscale y\nset ylabel 'µs (log)'\n"
        "set xtics rotate by -20\nset key top left\nset grid ytics\n"
        "plot '@DAT@' using 2:xtic(1) title 'p50', '' using 3 title 'p99'"),
    ok = bench_common:finish_report(Base, Report0, Plot),
    ok.

%% -- on the peers -------------------------------------------------------------------------------

send(disterl, Dest, Msg) -> Dest ! Msg, ok;
send({partisan, Opts}, Dest, Msg) -> partisan:forward_message(Dest, Msg, Opts).

%% @doc A sink that acks every bulk message `{bulk, From, Bin}' with `bulk_ack'.
spawn_sink(Wire, MaxMs) ->
    spawn(fun() -> sink_loop(Wire, MaxMs) end).

sink_loop(Wire, MaxMs) ->
    receive
        {bulk, From, _Bin} ->
            _ = send(Wire, From, bulk_ack),
            sink_loop(Wire, MaxMs);
        stop -> ok
    after MaxMs -> ok
    end.

%% @doc A bulk sender keeping `Window' messages of `Size' bytes in flight until `bulk_stop/1'.
bulk_start(Wire, Sink, Size, Window, MaxMs) ->
    spawn(fun() ->
                  Bin = binary:copy(<<"b">>, Size),
                  erlang:send_after(MaxMs, self(), {stop, none}),
                  bulk_loop(Wire, Sink, Bin, Window, 0, 0)
          end).

bulk_loop(Wire, Sink, Bin, Window, InFlight, Acked) when InFlight < Window ->
    case send(Wire, Sink, {bulk, self(), Bin}) of
        ok -> bulk_loop(Wire, Sink, Bin, Window, InFlight + 1, Acked);
        {error, queue_full} -> bulk_wait(Wire, Sink, Bin, Window, InFlight, Acked, 1)
    end;
bulk_loop(Wire, Sink, Bin, Window, InFlight, Acked) ->
    bulk_wait(Wire, Sink, Bin, Window, InFlight, Acked, 5000).

bulk_wait(Wire, Sink, Bin, Window, InFlight, Acked, Timeout) ->
    receive
        bulk_ack -> bulk_loop(Wire, Sink, Bin, Window, InFlight - 1, Acked + 1);
        {stop, From} -> bulk_done(From, Acked * byte_size(Bin))
    after Timeout ->
        bulk_loop(Wire, Sink, Bin, Window, InFlight, Acked)
    end.

bulk_done(none, _) -> ok;
bulk_done(From, Bytes) -> From ! {bulk_done, self(), Bytes}.

%% @doc Stops a bulk sender; returns the bytes acknowledged.
bulk_stop(Pid) ->
    Pid ! {stop, self()},
    receive {bulk_done, Pid, Bytes} -> Bytes after 10000 -> 0 end.
