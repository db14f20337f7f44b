%% @doc Channel compression over a slow link: compressible 64 KiB payloads from A to B through
%% `partisan_linkemu' proxies capped at 100 Mbit/s (RTT 1 ms), on a channel without compression
%% and on one with `compression => true' (zstd level 1, on the data plane's threads), on the same
%% two nodes, repetitions interleaved.
%%
%% Each run: `senders' processes on A each keep at most `window' unacknowledged messages in
%% flight to their own receiver on B, which acks every `ack' messages over the same channel. The
%% rate is what B's receivers got between the end of the warm-up and the end of the window; the
%% bytes on the wire are the proxy's byte counter over the same span (both directions, acks
%% included). Knobs: BENCH_LINK_RATE_MBIT (100), BENCH_COMPRESSION_PAYLOAD (65536),
%% BENCH_COMPRESSION_SENDERS (4), BENCH_WINDOW (16), BENCH_REPS (3), BENCH_WARMUP_MS (1000),
%% BENCH_DURATION_MS (3000).
-module(bench_compression).

-export([main/0]).
%% Run on the peers.
-export([receiver/2, sender/5, counts/1]).

-import(bench_common, [env_int/2, median/1, fmt_int/1]).

-define(RPC_TIMEOUT, 15000).

main() ->
    Cfg = #{rate_mbit => env_int("BENCH_LINK_RATE_MBIT", 100),
            payload => env_int("BENCH_COMPRESSION_PAYLOAD", 65536),
            senders => env_int("BENCH_COMPRESSION_SENDERS", 4),
            window => env_int("BENCH_WINDOW", 16),
            reps => env_int("BENCH_REPS", 3),
            warmup_ms => env_int("BENCH_WARMUP_MS", 1000),
            duration_ms => env_int("BENCH_DURATION_MS", 3000)},
    Runs = 2 * maps:get(reps, Cfg),
    Max = env_int("BENCH_MAX_TOTAL_MS", 90000 + Runs * (maps:get(warmup_ms, Cfg) + maps:get(duration_ms, Cfg) + 10000)),
    bench_common:main("compression", {Max, fun(W) -> run(W, Cfg) end}).

%% A compressible term whose external format is about `Size' bytes: records with repeated keys,
%% short texts and integers (what a typical application sends).
payload(Size) ->
    Rec = fun(I) -> #{user => <<"user", (integer_to_binary(I rem 1000))/binary>>,
                      count => I * 7919, status => active} end,
    grow(Rec, 1, [], Size).

grow(Rec, I, Acc, Size) ->
    case I rem 64 =:= 0 andalso byte_size(term_to_binary(Acc)) >= Size of
        true -> Acc;
        false -> grow(Rec, I + 1, [Rec(I) | Acc], Size)
    end.

run(W, Cfg) ->
    Started = erlang:system_time(second),
    Tag = os:getpid(),
    Args = bench_common:peer_args([]),
    {PeerA, A} = bench_common:start_peer(W, "zip_a_" ++ Tag, Args),
    {PeerB, B} = bench_common:start_peer(W, "zip_b_" ++ Tag, Args),
    try
        Channels = #{plain => #{parallelism => 1}, zip => #{parallelism => 1, compression => true}},
        SpecA = bench_common:start_partisan(A, #{channels => Channels}),
        SpecB = bench_common:start_partisan(B, #{channels => Channels}),
        Opts = #{delay_ms => 0.5, rate_mbit => maps:get(rate_mbit, Cfg), window => 8 * 1048576},
        {PortPA, PxA} = bench_common:linkemu_start(W, spec_port(SpecA), Opts),
        {PortPB, PxB} = bench_common:linkemu_start(W, spec_port(SpecB), Opts),
        try
            ok = erpc:call(A, partisan_peer_service, join, [via(SpecB, PortPB)], ?RPC_TIMEOUT),
            ok = erpc:call(B, partisan_peer_service, join, [via(SpecA, PortPA)], ?RPC_TIMEOUT),
            ok = erpc:call(A, bench_common, wait_fully_connected, [B, 20000], 30000),
            ok = erpc:call(B, bench_common, wait_fully_connected, [A, 20000], 30000),
            Payload = payload(maps:get(payload, Cfg)),
            Size = byte_size(term_to_binary(Payload)),
            Zipped = byte_size(term_to_binary(Payload, [{compressed, 1}])),
            io:format("payload ~b bytes (zlib -1 would make it ~b), link ~b Mbit/s~n",
                      [Size, Zipped, maps:get(rate_mbit, Cfg)]),
            Results = [begin
                           R = run_one(Cfg, A, B, [PxA, PxB], Ch, Payload, Size),
                           io:format("  rep ~b ~-5s ~8.1f msg/s ~7.2f MB/s payload ~7.2f MB/s wire~n",
                                     [Rep, Ch, maps:get(rate, R), maps:get(mbs, R), maps:get(wire_mbs, R)]),
                           {Ch, R}
                       end || Rep <- lists:seq(1, maps:get(reps, Cfg)), Ch <- [plain, zip]],
            Info = erpc:call(A, bench_common, node_info, []),
            report(Cfg, Started, {Info, Args}, Size, Results)
        after
            bench_common:linkemu_stop(PxA),
            bench_common:linkemu_stop(PxB)
        end
    after
        bench_common:stop_peer(PeerB),
        bench_common:stop_peer(PeerA)
    end.

spec_port(#{listen_addrs := [#{port := P} | _]}) -> P.

via(Spec, Port) -> Spec#{listen_addrs => [#{ip => {127, 0, 0, 1}, port => Port}]}.

proxy_bytes(Pxs) ->
    lists:sum([maps:get(bytes, bench_common:linkemu_stats(P), 0) || P <- Pxs]).

run_one(Cfg, A, B, Pxs, Ch, Payload, Size) ->
    #{senders := N, window := Win, warmup_ms := Warm, duration_ms := Dur} = Cfg,
    Deadline = Warm + Dur + 30000,
    Receivers = [erpc:call(B, erlang, spawn, [?MODULE, receiver, [Ch, Deadline]]) || _ <- lists:seq(1, N)],
    Senders = [erpc:call(A, erlang, spawn, [?MODULE, sender, [Ch, R, Payload, Win, Deadline]]) || R <- Receivers],
    [S ! go || S <- Senders],
    timer:sleep(Warm),
    {C0, Wire0} = {lists:sum(erpc:call(B, ?MODULE, counts, [Receivers])), proxy_bytes(Pxs)},
    T0 = erlang:monotonic_time(millisecond),
    timer:sleep(Dur),
    {C1, Wire1} = {lists:sum(erpc:call(B, ?MODULE, counts, [Receivers])), proxy_bytes(Pxs)},
    Secs = (erlang:monotonic_time(millisecond) - T0) / 1000,
    [exit(S, kill) || S <- Senders],
    [erpc:call(B, erlang, exit, [R, kill]) || R <- Receivers],
    Rate = (C1 - C0) / Secs,
    #{rate => Rate, mbs => Rate * Size / 1.0e6, wire_mbs => (Wire1 - Wire0) / Secs / 1.0e6}.

%% -- on the peers -------------------------------------------------------------------------------

%% B: counts messages, acks every `?ACK' to the sender.
receiver(Ch, Deadline) ->
    erlang:send_after(Deadline, self(), stop),
    receiver_loop(Ch, 0).

-define(ACK, 4).

receiver_loop(Ch, N) ->
    receive
        {data, From, _Payload} ->
            N1 = N + 1,
            N1 rem ?ACK =:= 0 andalso partisan:forward_message(From, {ack, ?ACK}, #{channel => Ch}),
            receiver_loop(Ch, N1);
        {count, Who} ->
            Who ! {count, self(), N},
            receiver_loop(Ch, N);
        stop ->
            ok
    end.

counts(Receivers) ->
    [begin R ! {count, self()}, receive {count, R, N} -> N after 5000 -> 0 end end || R <- Receivers].

%% A: keeps at most `Win' messages unacknowledged.
sender(Ch, To, Payload, Win, Deadline) ->
    erlang:send_after(Deadline, self(), stop),
    receive go -> ok end,
    sender_loop(Ch, To, {data, partisan:self(), Payload}, Win, 0).

sender_loop(Ch, To, Msg, Win, InFlight) when InFlight < Win ->
    case partisan:forward_message(To, Msg, #{channel => Ch}) of
        ok -> sender_loop(Ch, To, Msg, Win, InFlight + 1);
        {error, _} -> receive stop -> ok after 1 -> sender_loop(Ch, To, Msg, Win, InFlight) end
    end;
sender_loop(Ch, To, Msg, Win, InFlight) ->
    receive
        {ack, K} -> sender_loop(Ch, To, Msg, Win, InFlight - K);
        stop -> ok
    end.

%% -- report -------------------------------------------------------------------------------------

report(Cfg, Started, {Info, Args}, Size, Results) ->
    Env = bench_common:environment("Channel compression over a 100 Mbit/s emulated link", Started,
                                   [{"", Info, Args}]),
    Med = fun(Ch, K) -> median([maps:get(K, R) || {C, R} <- Results, C =:= Ch]) end,
    Row = fun(Ch, Label) ->
        io_lib:format("| ~s | ~ts | ~.2f | ~.2f |~n",
                      [Label, fmt_int(round(Med(Ch, rate))), Med(Ch, mbs), Med(Ch, wire_mbs)])
    end,
    Report = [Env,
              io_lib:format("Payload: a compressible term of ~b bytes (ETF), ~b senders × window ~b, "
                            "link ~b Mbit/s each way (partisan_linkemu, RTT 1 ms), ~b reps (median).~n~n",
                            [Size, maps:get(senders, Cfg), maps:get(window, Cfg), maps:get(rate_mbit, Cfg),
                             maps:get(reps, Cfg)]),
              "| channel | msg/s | payload MB/s | wire MB/s (both ways) |\n|---|---:|---:|---:|\n",
              Row(plain, "no compression"), Row(zip, "compression => true (zstd 1)"),
              io_lib:format("~nCompression / none: ~.2f× messages per second.~n",
                            [Med(zip, rate) / max(1.0e-9, Med(plain, rate))])],
    io:format("~ts", [Report]),
    _ = bench_common:write_report("compression", Report),
    ok.
