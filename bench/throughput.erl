%% @doc Message throughput between two BEAM nodes: partisan's Rust data plane vs Distributed Erlang.
%%
%% Run it with `bench/run_throughput.sh' (see `bench/README.md'). The controller node (the one
%% running `main/0') starts two peer nodes A and B with `peer:start_link/1', starts `partisan' on
%% both (one channel per parallelism under test, e.g. `data1' with 1 connection and `data8' with
%% 8), joins them with `partisan_peer_service:sync_join/1', and also connects them with
%% `net_kernel:connect_node/1'. Then, for every case (payload size x number of senders) and
%% transport, it runs:
%%
%%   * N sender processes on A, each paired with its own receiver process on B;
%%   * every sender keeps at most `window' unacknowledged messages in flight; its receiver acks
%%     (cumulative count) every `ack_every' messages, over the same transport;
%%   * partisan: `partisan:forward_message(Receiver, Payload, #{channel => C})', retrying after a
%%     short back-off on `{error, queue_full}' (retries are counted); disterl: `Receiver ! Payload';
%%   * the rate is measured on B, with B's clock: messages delivered to the receivers between the
%%     end of the warm-up and the end of the measurement window;
%%   * after the window the senders stop, B waits until every message a sender counted as sent
%%     has been delivered (a loss check), and the processes end.
%%
%% Repetitions are interleaved (rep 1 of every case and transport, then rep 2, ...) so slow drift
%% of the machine affects all transports alike. Every wait is bounded; a watchdog halts the
%% controller with a non-zero status if the whole run overruns.
%%
%% Every function that runs on a peer is exported from this module (peers load it via `-pa').
-module(throughput).

-export([main/0]).
%% Run on the peers (through erpc).
-export([spawn_senders/5, spawn_receivers/4, measure/4, stop_senders/2, drain/3,
         stop_receivers/3]).

-import(bench_common, [env_int/2, env_ints/2, median/1, fmt_rate/1, fmt_int/1, size_label/1]).

-define(STALL_MS, 5000).          % a sender whose window stays full this long gives up
-define(RPC_TIMEOUT, 15000).
-define(HZ, 100).                 % USER_HZ: the unit of /proc CPU times on Linux
-define(MiB, 1048576).

%% -- controller -------------------------------------------------------------------------------

%% @doc Entry point (`erl -eval "throughput:main()"'): halts with 0 on success, non-zero on failure.
main() ->
    Cfg = config(),
    Sets = flag_sets(),
    bench_common:main("throughput", {length(Sets) * maps:get(max_total_ms, Cfg),
                                     fun(W) -> run_sets(Cfg#{watchdog => W}, Sets) end}).

%% BENCH_THR_FLAGS: `;'-separated sets of extra peer flags ("" is the defaults), one full run
%% and report each (`throughput-<date>' for the defaults, `throughput-sbwt-none-<date>' for
%% `+sbwt none'). Default: both, as the README shows both.
flag_sets() ->
    case os:getenv("BENCH_THR_FLAGS") of
        false -> [[], ["+sbwt", "none"]];
        V -> [string:lexemes(F, " ") || F <- string:split(V, ";", all)]
    end.

run_sets(Cfg, Sets) ->
    Results = [begin
                   io:format("peers with ~ts~n", [case Flags of [] -> "default flags"; _ -> lists:join(" ", Flags) end]),
                   run(Cfg#{extra_args => maps:get(extra_args, Cfg) ++ Flags, report => report_name(Flags)})
               end || Flags <- Sets],
    case [R || R <- Results, R =/= ok] of
        [] -> ok;
        [Failed | _] -> Failed
    end.

%% "throughput", or "throughput-sbwt-none" for ["+sbwt", "none"].
report_name(Flags) ->
    Words = [string:trim(F, leading, "+-") || F <- Flags],
    lists:flatten(lists:join("-", ["throughput" | [W || W <- Words, W =/= ""]])).

config() ->
    Warmup = env_int("BENCH_WARMUP_MS", 300),
    Duration = env_int("BENCH_DURATION_MS", 1000),
    Reps = env_int("BENCH_REPS", 2),
    Payloads = env_ints("BENCH_PAYLOADS", [10, 1024, 65536, ?MiB]),
    Senders = env_ints("BENCH_SENDERS", [1, 8, 64]),
    Pars = env_ints("BENCH_PARALLELISM", [1, 8]),
    %% `ack => true' sends (exactly once across lost connections) on the first parallelism, in the
    %% same run: the cost of ack against plain sends.
    AckPars = env_ints("BENCH_ACK_PARALLELISM", lists:sublist(Pars, 1)),
    Transports = [{partisan, P} || P <- Pars] ++ [{partisan, {ack, P}} || P <- AckPars]
        ++ [disterl || env_int("BENCH_DISTERL", 1) =:= 1],
    Runs = Reps * length(Payloads) * length(Senders) * length(Transports),
    ResultsDir = case os:getenv("BENCH_RESULTS_DIR") of
        false -> filename:join("bench", "results");
        D -> D
    end,
    #{warmup_ms => Warmup, duration_ms => Duration, reps => Reps,
      window => env_int("BENCH_WINDOW", 1000), ack_every => env_int("BENCH_ACK", 100),
      window_bytes => env_int("BENCH_WINDOW_BYTES", 32 * ?MiB),
      spread_keys => env_int("BENCH_SPREAD_KEYS", 0) =:= 1,
      payloads => Payloads, senders => Senders, parallelism => Pars, transports => Transports,
      extra_args => string:lexemes(os:getenv("BENCH_PEER_ARGS", ""), " "),
      results_dir => ResultsDir,
      %% ~1.2 s of set-up and tear-down per run is far more than needed; the rest is start-up.
      max_total_ms => env_int("BENCH_MAX_TOTAL_MS", 60000 + Runs * (Warmup + Duration + 1500))}.

run(Cfg) ->
    Args = bench_common:peer_args(maps:get(extra_args, Cfg)),
    Tag = os:getpid(),
    W = maps:get(watchdog, Cfg),
    {PeerA, A} = bench_common:start_peer(W, "thr_a_" ++ Tag, Args),
    try
        {PeerB, B} = bench_common:start_peer(W, "thr_b_" ++ Tag, Args),
        try
            bench(Cfg#{args => Args}, A, B)
        after
            bench_common:stop_peer(PeerB)
        end
    after
        bench_common:stop_peer(PeerA)
    end.

channel({ack, P}) -> channel(P);
channel(P) -> list_to_atom("data" ++ integer_to_list(P)).

bench(Cfg, A, B) ->
    %% One partisan channel per parallelism under test, so both run on the same nodes.
    Pars = lists:usort(maps:get(parallelism, Cfg) ++ [P || {partisan, {ack, P}} <- maps:get(transports, Cfg)]),
    Channels = maps:from_list([{channel(P), #{parallelism => P}} || P <- Pars]),
    [ok = erpc:call(N, application, set_env, [partisan, channels, Channels]) || N <- [A, B]],
    %% BENCH_PARTISAN_TLS=Dir (bench/tls.sh): partisan over TLS with Dir's test certificates.
    [ok = erpc:call(N, application, set_env, [partisan, K, V])
     || N <- [A, B], {K, V} <- maps:to_list(tls_env())],
    [{ok, _} = erpc:call(N, application, ensure_all_started, [partisan], ?RPC_TIMEOUT) || N <- [A, B]],
    SpecB = erpc:call(B, partisan, node_spec, []),
    T0 = erlang:monotonic_time(millisecond),
    ok = erpc:call(A, partisan_peer_service, sync_join, [SpecB], ?RPC_TIMEOUT),
    %% sync_join waits for A's connections to B; B dials A after gossip, wait for those too.
    ok = erpc:call(B, bench_common, wait_fully_connected, [A, 10000], ?RPC_TIMEOUT),
    JoinMs = erlang:monotonic_time(millisecond) - T0,
    true = erpc:call(A, net_kernel, connect_node, [B], ?RPC_TIMEOUT),
    true = lists:member(B, erpc:call(A, erlang, nodes, [])),
    Info = #{started => erlang:system_time(second), a => erpc:call(A, bench_common, node_info, []),
             b => erpc:call(B, bench_common, node_info, []), join_ms => JoinMs,
             channels => erpc:call(A, partisan_config, channels, [])},
    Cases = [{Pl, S} || Pl <- maps:get(payloads, Cfg), S <- maps:get(senders, Cfg)],
    Runs = [{Rep, Case, T} || Rep <- lists:seq(1, maps:get(reps, Cfg)), Case <- Cases,
                              T <- maps:get(transports, Cfg)],
    io:format("~b runs of ~b+~b ms (A=~s, B=~s, partisan joined in ~b ms)~n",
              [length(Runs), maps:get(warmup_ms, Cfg), maps:get(duration_ms, Cfg), A, B, JoinMs]),
    LimitsBefore = loopback_limits(Cfg),
    Results = [begin
                   R = run_one(Cfg, A, B, Case, T),
                   io:format("  rep ~b ~-12ts ~-14ts ~12ts msg/s~ts~n",
                             [Rep, case_label(Case), transport_label(T),
                              fmt_int(round(maps:get(rate, R))), run_flags(R)]),
                   {{Case, T}, R}
               end || {Rep, Case, T} <- Runs],
    Limits = maps:merge_with(fun(_, L1, L2) -> max(L1, L2) end, LimitsBefore, loopback_limits(Cfg)),
    Report0 = report(Cfg, Info#{loopback_limits => Limits}, Cases, Results),
    Base = bench_common:write_report(maps:get(report, Cfg, "throughput"), Report0),
    ok = bench_common:finish_report(Base, Report0, plot(Base, Cfg, Cases, Results)),
    case [{Case, T, R} || {{Case, T}, R} <- Results, not run_ok(R)] of
        [] -> ok;
        Bad -> {failed, io_lib:format("~b run(s) lost messages, errored or stalled: ~p",
                                      [length(Bad), [{C, T} || {C, T, _} <- Bad]])}
    end.

run_flags(R) ->
    [[io_lib:format("  retries=~b", [maps:get(retries, R)]) || maps:get(retries, R) > 0],
     [io_lib:format("  LOST=~b", [maps:get(lost, R)]) || maps:get(lost, R) =/= 0],
     [io_lib:format("  errors=~p", [maps:get(errors, R)]) || maps:get(errors, R) =/= []]].

run_ok(#{lost := 0, errors := []}) -> true;
run_ok(_) -> false.

wire(disterl, _) -> disterl;
wire({partisan, {ack, P}}, Cfg) ->
    {partisan, Opts} = wire({partisan, P}, Cfg),
    {partisan, Opts#{ack => true}};
wire({partisan, P}, #{spread_keys := true}) -> {partisan, #{channel => channel(P), partition_key => spread}};
wire({partisan, P}, _) -> {partisan, #{channel => channel(P)}}.

%% The credit window of one case: `window' messages, but at most `window_bytes' in flight over
%% all senders (at least 2 per sender); a receiver acks at least twice per window.
window(Cfg, Payload, NSenders) ->
    #{window := W0, ack_every := A0, window_bytes := WB} = Cfg,
    W = max(2, min(W0, WB div (Payload * NSenders))),
    {W, max(1, min(A0, W div 2))}.

run_one(Cfg, A, B, {Payload, NSenders}, T) ->
    #{warmup_ms := Warm, duration_ms := Dur} = Cfg,
    {W, Ack} = window(Cfg, Payload, NSenders),
    MaxMs = Warm + Dur + 20000,
    Wire = wire(T, Cfg),
    StatsA0 = pstats(A, T),
    StatsB0 = pstats(B, T),
    Senders = erpc:call(A, ?MODULE, spawn_senders, [NSenders, Wire, Payload, W, MaxMs]),
    {Sampler, Receivers} = erpc:call(B, ?MODULE, spawn_receivers, [Senders, Wire, Ack, MaxMs]),
    PidA = bench_common:os_pid(A),
    [S ! {go, R} || {S, R} <- lists:zip(Senders, Receivers)],
    M = erpc:call(B, ?MODULE, measure, [Sampler, PidA, Warm, Dur], Warm + Dur + ?RPC_TIMEOUT),
    SenderStats = erpc:call(A, ?MODULE, stop_senders, [Senders, 5000], ?RPC_TIMEOUT),
    Sent = lists:sum([maps:get(sent, S) || S <- SenderStats]),
    {_, Delivered} = erpc:call(B, ?MODULE, drain, [Sampler, Sent, 5000], ?RPC_TIMEOUT),
    _ = erpc:call(B, ?MODULE, stop_receivers, [Sampler, Receivers, 2000], ?RPC_TIMEOUT),
    Errors = lists:usort(lists:append([maps:get(errors, S) || S <- SenderStats])),
    M#{sent => Sent, delivered => Delivered, lost => Sent - Delivered,
       retries => lists:sum([maps:get(retries, S) || S <- SenderStats]),
       errors => Errors,
       stats_a => stats_delta(StatsA0, pstats(A, T)),
       stats_b => stats_delta(StatsB0, pstats(B, T))}.

%% The loopback limit for 1 MiB payloads (when the run has them): bytes per second that plain TCP
%% moves between two threads over as many connections as each parallelism under test
%% (`loopback_limit`, built by bench/run.sh), measured while the peers are idle.
loopback_limits(Cfg) ->
    case {lists:member(?MiB, maps:get(payloads, Cfg)), os:getenv("BENCH_LOOPBACK_LIMIT", "")} of
        {true, Bin} when Bin =/= "" ->
            Conns = lists:usort([1 | maps:get(parallelism, Cfg)]),
            maps:from_list([{C, loopback_limit(Bin, C)} || C <- Conns]);
        _ ->
            #{}
    end.

loopback_limit(Bin, Connections) ->
    Cmd = io_lib:format("~ts --connections ~b --write-size ~b --warmup-ms 200 --millis 1000",
                        [Bin, Connections, ?MiB]),
    Out = os:cmd(lists:flatten(Cmd)),
    case re:run(Out, "bytes_per_sec=([0-9.]+)", [{capture, all_but_first, list}]) of
        {match, [Rate]} -> list_to_float(Rate);
        nomatch -> error({loopback_limit_failed, Out})
    end.

pstats(_, disterl) -> #{};
pstats(N, {partisan, _}) -> erpc:call(N, partisan, stats, []).

stats_delta(S0, S1) -> maps:map(fun(K, V) -> V - maps:get(K, S0, 0) end, S1).

%% -- report -----------------------------------------------------------------------------------

case_label({Payload, N}) -> io_lib:format("~ts x~b", [size_label(Payload), N]).

transport_label(disterl) -> ["disterl", tls_label()];
transport_label({partisan, {ack, P}}) -> io_lib:format("partisan+ack P=~b~ts", [P, tls_label()]);
transport_label({partisan, P}) -> io_lib:format("partisan P=~b~ts", [P, tls_label()]).

tls_label() ->
    case tls_env() of
        #{tls := true} -> " TLS";
        _ -> ""
    end.

%% Mutual TLS with the certificates of `gen_test_certs.sh' in BENCH_PARTISAN_TLS (none: plain).
tls_env() ->
    case os:getenv("BENCH_PARTISAN_TLS", "") of
        "" -> #{};
        Dir ->
            F = fun(Name) -> filename:join(Dir, Name) end,
            Opts = [{certfile, F("node.pem")}, {keyfile, F("node.key")}, {cacertfile, F("ca.pem")},
                    {verify, verify_peer}],
            #{tls => true, tls_server_options => [{fail_if_no_peer_cert, true} | Opts],
              tls_client_options => Opts}
    end.

rates(Results, Key) -> [maps:get(rate, R) || {K, R} <- Results, K =:= Key].
runs(Results, Key) -> [R || {K, R} <- Results, K =:= Key].

cell(Results, Key) ->
    Rs = rates(Results, Key),
    io_lib:format("~ts (~ts–~ts)", [fmt_int(round(median(Rs))), fmt_rate(lists:min(Rs)),
                                    fmt_rate(lists:max(Rs))]).

report(Cfg, Info, Cases, Results) ->
    Ts = maps:get(transports, Cfg),
    PTs = [T || T = {partisan, _} <- Ts],
    Header = ["| payload | senders | W | ", [[transport_label(T), " msg/s | "] || T <- Ts],
              [[transport_label(T), " / disterl | "] || T <- PTs, lists:member(disterl, Ts)],
              "best partisan |\n"],
    Sep = ["|---|---:|---:|", [["---:|"] || _ <- Ts], [["---:|"] || _ <- PTs, lists:member(disterl, Ts)],
           "---|\n"],
    Rows = [begin
                Med = fun(T) -> median(rates(Results, {Case, T})) end,
                Best = best(PTs, Med),
                ["| ", size_label(Payload), " | ", integer_to_list(N), " | ",
                 integer_to_list(element(1, window(Cfg, Payload, N))), " | ",
                 [[cell(Results, {Case, T}), " | "] || T <- Ts],
                 [[io_lib:format("~.2f", [Med(T) / Med(disterl)]), " | "]
                  || T <- PTs, lists:member(disterl, Ts)],
                 Best, " |\n"]
            end || Case = {Payload, N} <- Cases],
    Diag = diagnostics(Cases, Ts, Results),
    #{a := NA} = Info,
    Env = bench_common:environment("Partisan data plane vs Distributed Erlang: message throughput",
                                   maps:get(started, Info), [{"", NA, maps:get(args, Cfg)}]),
    [Env,
     io_lib:format("- partisan runtime: tokio multi-thread, `io_threads` default (schedulers online, at most 4)~n", []),
     io_lib:format("- partisan channels on both peers: `~0p` (join took ~b ms)~n",
                   [maps:get(channels, Info), maps:get(join_ms, Info)]),
     io_lib:format("- partisan senders' partition key: ~ts~n",
                   [case maps:get(spread_keys, Cfg) of
                        true -> "sender I uses `partition_key => I - 1` (BENCH_SPREAD_KEYS=1)";
                        false -> "none (the NIF hashes the caller's pid to pick the connection)"
                    end]),
     io_lib:format("- window W = ~b unacked messages per sender but at most ~ts in flight over all "
                   "senders (at least 2 per sender), ack every min(~b, W/2) messages; "
                   "warm-up ~b ms + measured ~b ms per run; ~b repetitions, interleaved~n~n",
                   [maps:get(window, Cfg), size_label(maps:get(window_bytes, Cfg)),
                    maps:get(ack_every, Cfg), maps:get(warmup_ms, Cfg),
                    maps:get(duration_ms, Cfg), maps:get(reps, Cfg)]),
     "## Throughput\n\n",
     "Messages delivered per second to the receivers on B: median of the repetitions "
     "(min–max in parentheses). Ratio = median partisan / median disterl.\n\n",
     Header, Sep, Rows, "\n",
     overall_best(Cases, PTs, lists:member(disterl, Ts), Results),
     limit_section(Cases, Ts, maps:get(loopback_limits, Info, #{}), Results),
     noise_note(Results),
     "## Diagnostics\n\n",
     "Summed over the repetitions. `retries`: `{error, queue_full}` returned to senders; "
     "`lost`: sent (ok) minus delivered after draining; CPU: % of one core during the measured "
     "window, median over repetitions, split into BEAM scheduler threads / partisan-io (tokio) "
     "threads / all other threads of the peer's OS process; CPU µs/msg: CPU time of A and B "
     "together per delivered message (median); foreign CPU: busy CPU of the machine not used "
     "by A or B during the window (controller and any other workload; the machine has ",
     string:trim(os:cmd("nproc")), "00 % in all).\n\n",
     Diag].

%% The partisan configuration with the best geometric mean over the cases.
overall_best(_, [], _, _) ->
    [];
overall_best(Cases, PTs, HasDist, Results) ->
    Med = fun(Case, T) -> median(rates(Results, {Case, T})) end,
    GMean = fun(T) ->
        math:exp(lists:sum([math:log(max(1.0e-9, Med(C, T))) || C <- Cases]) / length(Cases))
    end,
    Scored = lists:reverse(lists:sort([{GMean(T), T} || T <- PTs])),
    [{Best, BestT} | _] = Scored,
    Ratio = case HasDist of
        true -> io_lib:format(", ~.2fx disterl", [Best / GMean(disterl)]);
        false -> ""
    end,
    [io_lib:format("Best partisan configuration over all cases (geometric mean of the medians): "
                   "**~ts** (~ts msg/s~ts). All: ~ts.~n~n",
                   [transport_label(BestT), fmt_int(round(Best)), Ratio,
                    lists:join(", ", [io_lib:format("~ts ~ts", [transport_label(T), fmt_int(round(G))])
                                      || {G, T} <- Scored])])].

%% The 1 MiB rows' payload bytes per second as a share of the loopback limit with as many
%% connections as the transport uses (disterl: one).
limit_section(_, _, Limits, _) when map_size(Limits) =:= 0 ->
    [];
limit_section(Cases, Ts, Limits, Results) ->
    Conns = fun(disterl) -> 1; ({partisan, {ack, P}}) -> P; ({partisan, P}) -> P end,
    Gbs = fun(BytesPerSec) -> io_lib:format("~.2f GB/s", [BytesPerSec / 1.0e9]) end,
    Cell = fun(Case, T) ->
                   Bytes = median(rates(Results, {Case, T})) * ?MiB,
                   io_lib:format("~ts (~b %)", [Gbs(Bytes), round(100 * Bytes / maps:get(Conns(T), Limits))])
           end,
    ["## 1 MiB against the loopback limit\n\n",
     "The loopback limit: plain TCP over this machine's loopback, a writer and a reader thread per "
     "connection, 1 MiB writes (`loopback_limit`), measured before and after the runs while the "
     "peers were idle, the higher of the two: ",
     lists:join(", ", [io_lib:format("~b connection~ts ~ts", [C, [$s || C > 1], Gbs(L)])
                       || {C, L} <- lists:sort(maps:to_list(Limits))]),
     ". Each cell: payload bytes per second of the median run, and its share of the limit with "
     "as many connections as the transport uses (disterl: one).\n\n",
     "| senders | ", lists:join(" | ", [transport_label(T) || T <- Ts]), " |\n",
     "|---:|", [["---:|"] || _ <- Ts], "\n",
     [["| ", integer_to_list(N), " | ", lists:join(" | ", [Cell(Case, T) || T <- Ts]), " |\n"]
      || Case = {?MiB, N} <- Cases],
     "\n"].

noise_note(Results) ->
    bench_common:noise_note([maps:get(cpu_foreign, R) || {_, R} <- Results]).

%% A PNG: payload bytes per second (log scale) per case and transport.
plot(Base, Cfg, Cases, Results) ->
    Ts = maps:get(transports, Cfg),
    Data = [["# case ", lists:join(" ", [["\"", transport_label(T), "\""] || T <- Ts]), "\n"],
            [["\"", case_label(C), "\" ",
              lists:join(" ", [io_lib:format("~.3f", [median(rates(Results, {C, T})) * element(1, C) / 1.0e6])
                               || T <- Ts]), "\n"] || C <- Cases]],
    Script = ["set title 'Throughput (payload MB/s, median), partisan vs disterl'\n"
              "set style data histograms\nset style histogram clustered gap 1\n"
              "set style fill solid 0.8 border -1\nset logscale y\nset ylabel 'MB/s (log)'\n"
              "set xtics rotate by -30\nset key top left\nset grid ytics\n"
              "plot ", lists:join(", ", [io_lib:format("'@DAT@' using ~b:xtic(1) title columnheader(~b)", [I + 1, I + 1])
                                         || I <- lists:seq(1, length(Ts))])],
    bench_common:plot(Base, Data, Script).

best([], _) -> "-";
best(PTs, Med) ->
    {_, T} = lists:max([{Med(T), T} || T <- PTs]),
    transport_label(T).

diagnostics(Cases, Ts, Results) ->
    Head = "| case | transport | sent | lost | retries | stats A: messages_sent / dropped_queue_full"
           " | stats B: messages_received / undeliverable | CPU A sched/io/other % "
           "| CPU B sched/io/other % | CPU µs/msg (A+B) | foreign CPU % |\n"
           "|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|\n",
    Rows = [begin
                Rs = runs(Results, {Case, T}),
                Sum = fun(K) -> lists:sum([maps:get(K, R) || R <- Rs]) end,
                SumS = fun(Side, K) -> lists:sum([maps:get(K, maps:get(Side, R), 0) || R <- Rs]) end,
                PStats = case T of
                    disterl -> ["-", " | ", "-"];
                    _ -> [fmt_int(SumS(stats_a, messages_sent)), " / ",
                          fmt_int(SumS(stats_a, dropped_queue_full)), " | ",
                          fmt_int(SumS(stats_b, messages_received)), " / ",
                          fmt_int(SumS(stats_b, undeliverable))]
                end,
                ["| ", case_label(Case), " | ", transport_label(T), " | ", fmt_int(Sum(sent)),
                 " | ", fmt_int(Sum(lost)), " | ", fmt_int(Sum(retries)), " | ", PStats, " | ",
                 cpu_cell(Rs, cpu_a), " | ", cpu_cell(Rs, cpu_b), " | ",
                 io_lib:format("~.2f", [median([cpu_per_msg(R) || R <- Rs])]), " | ",
                 integer_to_list(round(median([maps:get(cpu_foreign, R) || R <- Rs]))), " |\n"]
            end || Case <- Cases, T <- Ts],
    Errors = [io_lib:format("- ~ts ~ts: errors ~p~n", [case_label(C), transport_label(T), E])
              || {{C, T}, #{errors := E}} <- Results, E =/= []],
    [Head, Rows, "\n", Errors].

%% CPU time of A and B together per delivered message, in microseconds.
cpu_per_msg(#{cpu_a := A, cpu_b := B, rate := Rate}) when Rate > 0 ->
    (lists:sum(maps:values(A)) + lists:sum(maps:values(B))) / 100 / Rate * 1.0e6;
cpu_per_msg(_) ->
    0.0.

cpu_cell(Rs, Side) ->
    M = fun(K) -> median([maps:get(K, maps:get(Side, R)) || R <- Rs]) end,
    io_lib:format("~b / ~b / ~b", [round(M(sched)), round(M(io)), round(M(other))]).

%% -- on the peers -----------------------------------------------------------------------------

%% @doc Spawns `N' senders that wait for `{go, Receiver}'. `Wire' is `disterl' or
%% `{partisan, ForwardOpts}'. Each sender ends by itself after `MaxMs'.
spawn_senders(N, Wire, PayloadSize, Window, MaxMs) ->
    Payload = binary:copy(<<"x">>, PayloadSize),
    [spawn(fun() -> sender_init(sender_wire(Wire, I), Payload, Window, MaxMs) end)
     || I <- lists:seq(1, N)].

%% `partition_key => spread' gives sender I the partition key I: one connection each, in turn.
sender_wire({partisan, #{partition_key := spread} = Opts}, I) -> {partisan, Opts#{partition_key => I - 1}};
sender_wire(Wire, _) -> Wire.

-record(snd, {wire, dest, msg, window, sent = 0, acked = 0, retries = 0, errors = []}).

sender_init(Wire, Payload, Window, MaxMs) ->
    receive
        {go, Receiver} ->
            _ = erlang:send_after(MaxMs, self(), deadline),
            send_loop(#snd{wire = Wire, dest = Receiver, msg = Payload, window = Window})
    after MaxMs ->
        ok
    end.

send_loop(S = #snd{sent = Sent, acked = Acked, window = W}) when Sent - Acked < W ->
    receive
        {ack, N} -> send_loop(S#snd{acked = max(N, Acked)});
        {stop, From} -> sender_done(From, S);
        deadline -> sender_wait_stop(S#snd{errors = [deadline | S#snd.errors]})
    after 0 ->
        case send(S#snd.wire, S#snd.dest, S#snd.msg) of
            ok -> send_loop(S#snd{sent = Sent + 1});
            {error, queue_full} -> backoff(S#snd{retries = S#snd.retries + 1});
            {error, Reason} -> sender_wait_stop(S#snd{errors = [Reason]})
        end
    end;
send_loop(S) ->
    %% Window full: wait for an ack.
    receive
        {ack, N} -> send_loop(S#snd{acked = max(N, S#snd.acked)});
        {stop, From} -> sender_done(From, S);
        deadline -> sender_wait_stop(S#snd{errors = [deadline | S#snd.errors]})
    after ?STALL_MS ->
        sender_wait_stop(S#snd{errors = [{stalled, S#snd.sent, S#snd.acked}]})
    end.

%% The connection queue is full: wait 1 ms (or for an ack), then retry.
backoff(S) ->
    receive
        {ack, N} -> send_loop(S#snd{acked = max(N, S#snd.acked)});
        {stop, From} -> sender_done(From, S)
    after 1 ->
        send_loop(S)
    end.

sender_wait_stop(S) ->
    receive
        {stop, From} -> sender_done(From, S)
    after 30000 ->
        ok
    end.

sender_done(From, #snd{sent = Sent, acked = Acked, retries = R, errors = E}) ->
    From ! {sender_done, self(), #{sent => Sent, acked => Acked, retries => R, errors => E}}.

send(disterl, Dest, Msg) ->
    Dest ! Msg,
    ok;
send({partisan, Opts}, Dest, Msg) ->
    partisan:forward_message(Dest, Msg, Opts).

%% @doc Stops the senders and returns what each one sent.
stop_senders(Senders, Ms) ->
    [S ! {stop, self()} || S <- Senders],
    [receive {sender_done, S, Stats} -> Stats
     after Ms -> #{sent => 0, acked => 0, retries => 0, errors => [no_answer]}
     end || S <- Senders].

%% @doc Spawns one receiver per sender, and a sampler holding their delivery counters.
spawn_receivers(Senders, Wire0, AckEvery, MaxMs) ->
    N = length(Senders),
    Wire = case Wire0 of
        {partisan, Opts} -> {partisan, maps:remove(partition_key, Opts)};  % acks: keyed by pid
        disterl -> disterl
    end,
    CRef = counters:new(N, [write_concurrency]),
    Receivers = [spawn(fun() -> recv_loop(S, I, CRef, Wire, AckEvery, 0, AckEvery, MaxMs) end)
                 || {I, S} <- lists:zip(lists:seq(1, N), Senders)],
    Sampler = spawn(fun() -> sampler(CRef, N, MaxMs) end),
    {Sampler, Receivers}.

recv_loop(Sender, I, CRef, Wire, AckEvery, Count, NextAck, MaxMs) ->
    receive
        Msg when is_binary(Msg) ->
            counters:add(CRef, I, 1),
            C = Count + 1,
            case C of
                NextAck ->
                    ack(Wire, Sender, {ack, C}, 100),
                    recv_loop(Sender, I, CRef, Wire, AckEvery, C, NextAck + AckEvery, MaxMs);
                _ ->
                    recv_loop(Sender, I, CRef, Wire, AckEvery, C, NextAck, MaxMs)
            end;
        {stop, From} ->
            From ! {recv_done, self(), Count}
    after MaxMs ->
        ok
    end.

ack(Wire, Sender, Msg, Tries) ->
    case send(Wire, Sender, Msg) of
        {error, queue_full} when Tries > 0 -> receive after 1 -> ack(Wire, Sender, Msg, Tries - 1) end;
        _ -> ok
    end.

sampler(CRef, N, MaxMs) ->
    receive
        {read, From} ->
            From ! {count, self(), lists:sum([counters:get(CRef, I) || I <- lists:seq(1, N)]),
                    erlang:monotonic_time(microsecond)},
            sampler(CRef, N, MaxMs);
        stop ->
            ok
    after MaxMs ->
        ok
    end.

read(Sampler) ->
    Sampler ! {read, self()},
    receive {count, Sampler, C, T} -> {C, T} after 5000 -> error(sampler_timeout) end.

%% @doc On B: waits `Warm' ms, then counts deliveries over `Dur' ms; CPU use of A's OS process
%% (pid `PidA') and of this one is read from /proc over the same window.
measure(Sampler, PidA, Warm, Dur) ->
    receive after Warm -> ok end,
    PidB = list_to_integer(os:getpid()),
    Sys0 = bench_common:system_busy(),
    CpuA0 = bench_common:proc_cpu(PidA),
    CpuB0 = bench_common:proc_cpu(PidB),
    {C0, T0} = read(Sampler),
    receive after Dur -> ok end,
    {C1, T1} = read(Sampler),
    CpuA1 = bench_common:proc_cpu(PidA),
    CpuB1 = bench_common:proc_cpu(PidB),
    Sys1 = bench_common:system_busy(),
    Secs = (T1 - T0) / 1.0e6,
    CpuA = bench_common:cpu_pct(CpuA0, CpuA1, Secs),
    CpuB = bench_common:cpu_pct(CpuB0, CpuB1, Secs),
    Total = fun(M) -> lists:sum(maps:values(M)) end,
    %% Busy CPU of the whole machine not used by A or B (the controller, other workloads).
    Foreign = max(0.0, (Sys1 - Sys0) / ?HZ / Secs * 100 - Total(CpuA) - Total(CpuB)),
    #{count => C1 - C0, elapsed_us => T1 - T0, rate => (C1 - C0) / Secs,
      cpu_a => CpuA, cpu_b => CpuB, cpu_foreign => Foreign}.

%% @doc Waits until the receivers have got `Expected' messages in all (at most `Ms').
drain(Sampler, Expected, Ms) ->
    Deadline = erlang:monotonic_time(millisecond) + Ms,
    drain_loop(Sampler, Expected, Deadline).

drain_loop(Sampler, Expected, Deadline) ->
    {C, _} = read(Sampler),
    case C >= Expected of
        true -> {ok, C};
        false ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> {timeout, C};
                false -> receive after 5 -> drain_loop(Sampler, Expected, Deadline) end
            end
    end.

%% @doc Stops the receivers and the sampler; returns each receiver's count.
stop_receivers(Sampler, Receivers, Ms) ->
    [R ! {stop, self()} || R <- Receivers],
    Counts = [receive {recv_done, R, C} -> C after Ms -> no_answer end || R <- Receivers],
    Sampler ! stop,
    Counts.
