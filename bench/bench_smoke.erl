%% @doc A smoke run of the harness for `make test' (< 15 s): two peers, partisan and disterl,
%% a few hundred ping-pongs and a short credit-window stream on each transport. It checks that
%% the benchmark code still runs against the current API; it measures nothing worth reporting
%% and writes no report.
-module(bench_smoke).

-export([main/0]).

main() ->
    bench_common:main("smoke", {60000, fun run/1}).

run(W) ->
    Pair = bench_latency:setup_pair(W, "smoke", [], #{ping => #{parallelism => 2}}),
    #{a := A, b := B} = Pair,
    try
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
             true = Bytes > 0
         end || T <- [{partisan, ping}, disterl]],
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
