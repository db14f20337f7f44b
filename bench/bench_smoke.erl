%% @doc A smoke run of the harness for `make test' (< 15 s): two peers, partisan and disterl,
%% a few hundred ping-pongs and a short credit-window stream on each transport. It checks that
%% the benchmark code still runs against the current API and writes no report; its runs are too
%% short for figures worth publishing, but it prints the partisan/disterl ratios of the 10 B round
%% trip and the 64 KiB stream, so a large regression shows in every CI log.
-module(bench_smoke).

-export([main/0]).

main() ->
    bench_common:main("smoke", {60000, fun run/1}).

run(W) ->
    Pair = bench_latency:setup_pair(W, "smoke", [], #{ping => #{parallelism => 2}}),
    #{a := A, b := B} = Pair,
    try
        [{P50P, BytesP}, {P50D, BytesD}] =
            [begin
                 Wire = bench_latency:wire(T, ping),
                 Echo = erpc:call(B, bench_latency, spawn_echo, [Wire, 10000]),
                 Rtts = erpc:call(A, bench_latency, ping_run, [Wire, Echo, 10, 300, 5000], 10000),
                 erpc:call(B, bench_latency, stop, [Echo]),
                 300 = length(Rtts),
                 #{p50 := P50} = bench_latency:summarize(Rtts),
                 Bytes = bulk(A, B, Wire),
                 io:format("smoke ~p: 300 round trips, p50 ~.1f us; bulk stream ~b bytes acked~n",
                           [T, P50, Bytes]),
                 true = Bytes > 0,
                 {P50, Bytes}
             end || T <- [{partisan, ping}, disterl]],
        %% A regression guard that needs no timing assert: every CI log shows the ratios.
        io:format("smoke ratios partisan/disterl (one short run, noisy; make bench for figures): "
                  "10 B round trip p50 ~.2fx (lower is better), 64 KiB stream ~.2fx (higher is "
                  "better)~n", [P50P / P50D, BytesP / BytesD]),
        ok
    after
        bench_latency:teardown_pair(Pair)
    end.

%% 64 KiB messages, 4 in flight, for 200 ms.
bulk(A, B, Wire) ->
    Sink = erpc:call(B, bench_hol, spawn_sink, [Wire, 10000]),
    Snd = erpc:call(A, bench_hol, bulk_start, [Wire, Sink, 65536, 4, 10000]),
    receive after 200 -> ok end,
    Bytes = erpc:call(A, bench_hol, bulk_stop, [Snd], 15000),
    erpc:call(B, bench_latency, stop, [Sink]),
    Bytes.
