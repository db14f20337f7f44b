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
-export([node_info/0, spawn_senders/5, spawn_receivers/4, measure/4, stop_senders/2, drain/3,
         stop_receivers/3, wait_fully_connected/2]).

-define(STALL_MS, 5000).          % a sender whose window stays full this long gives up
-define(RPC_TIMEOUT, 15000).
-define(HZ, 100).                 % USER_HZ: the unit of /proc CPU times on Linux

%% -- controller -------------------------------------------------------------------------------

%% @doc Entry point (`erl -eval "throughput:main()"'): halts with 0 on success, non-zero on failure.
main() ->
    process_flag(trap_exit, true),
    ok = io:setopts(standard_io, [{encoding, unicode}]),
    Cfg = config(),
    Watchdog = spawn_link(fun() -> watchdog(maps:get(max_total_ms, Cfg)) end),
    Code = try run(Cfg#{watchdog => Watchdog}) of
               ok -> 0;
               {failed, Why} -> io:format(standard_error, "benchmark FAILED: ~ts~n", [Why]), 2
           catch
               Class:Reason:Stack ->
                   io:format(standard_error, "benchmark crashed: ~p:~p~n~p~n", [Class, Reason, Stack]),
                   1
           end,
    unlink(Watchdog),
    exit(Watchdog, kill),
    halt(Code).

watchdog(Ms) ->
    erlang:send_after(Ms, self(), timeout),
    watchdog_loop(Ms, []).

%% Learns the peers as they start, so it can stop them before halting.
watchdog_loop(Ms, Peers) ->
    receive
        {peer, Pid} ->
            watchdog_loop(Ms, [Pid | Peers]);
        timeout ->
            io:format(standard_error, "watchdog: benchmark exceeded ~b ms; stopping peers, halting~n",
                      [Ms]),
            [spawn(fun() -> catch peer:stop(P) end) || P <- Peers],
            Deadline = erlang:monotonic_time(millisecond) + 5000,
            _ = [receive after 10 -> ok end || _ <- lists:seq(1, 500),
                                               lists:any(fun is_process_alive/1, Peers),
                                               erlang:monotonic_time(millisecond) < Deadline],
            halt(3)
    end.

env_int(Name, Default) ->
    case os:getenv(Name) of
        false -> Default;
        "" -> Default;
        V -> list_to_integer(V)
    end.

env_ints(Name, Default) ->
    case os:getenv(Name) of
        false -> Default;
        "" -> Default;
        V -> [list_to_integer(string:trim(X)) || X <- string:lexemes(V, ",")]
    end.

config() ->
    Warmup = env_int("BENCH_WARMUP_MS", 500),
    Duration = env_int("BENCH_DURATION_MS", 2000),
    Reps = env_int("BENCH_REPS", 3),
    Payloads = env_ints("BENCH_PAYLOADS", [10, 1024]),
    Senders = env_ints("BENCH_SENDERS", [1, 8]),
    Pars = env_ints("BENCH_PARALLELISM", [1, 8]),
    Transports = [{partisan, P} || P <- Pars] ++ [disterl || env_int("BENCH_DISTERL", 1) =:= 1],
    Runs = Reps * length(Payloads) * length(Senders) * length(Transports),
    ResultsDir = case os:getenv("BENCH_RESULTS_DIR") of
        false -> filename:join("bench", "results");
        D -> D
    end,
    #{warmup_ms => Warmup, duration_ms => Duration, reps => Reps,
      window => env_int("BENCH_WINDOW", 1000), ack_every => env_int("BENCH_ACK", 100),
      spread_keys => env_int("BENCH_SPREAD_KEYS", 0) =:= 1,
      payloads => Payloads, senders => Senders, parallelism => Pars, transports => Transports,
      extra_args => string:lexemes(os:getenv("BENCH_PEER_ARGS", ""), " "),
      results_dir => ResultsDir,
      %% ~1.2 s of set-up and tear-down per run is far more than needed; the rest is start-up.
      max_total_ms => env_int("BENCH_MAX_TOTAL_MS", 60000 + Runs * (Warmup + Duration + 1200))}.

run(Cfg) ->
    BenchDir = filename:dirname(code:which(?MODULE)),
    PartisanEbin = filename:dirname(code:which(partisan)),
    Args = ["-connect_all", "false", "-pa", PartisanEbin, "-pa", BenchDir,
            "-setcookie", atom_to_list(erlang:get_cookie())] ++ maps:get(extra_args, Cfg),
    Tag = os:getpid(),
    {ok, PeerA, A} = start_peer("thr_a_" ++ Tag, Args),
    maps:get(watchdog, Cfg) ! {peer, PeerA},
    try
        {ok, PeerB, B} = start_peer("thr_b_" ++ Tag, Args),
        maps:get(watchdog, Cfg) ! {peer, PeerB},
        try
            bench(Cfg#{args => Args}, A, B)
        after
            catch peer:stop(PeerB)
        end
    after
        catch peer:stop(PeerA)
    end.

start_peer(Name, Args) ->
    peer:start_link(#{name => list_to_atom(Name), host => "127.0.0.1", longnames => true,
                      args => Args, wait_boot => 30000}).

channel(P) -> list_to_atom("data" ++ integer_to_list(P)).

bench(Cfg, A, B) ->
    %% One partisan channel per parallelism under test, so both run on the same nodes.
    Channels = maps:from_list([{channel(P), #{parallelism => P}} || P <- maps:get(parallelism, Cfg)]),
    [ok = erpc:call(N, application, set_env, [partisan, channels, Channels]) || N <- [A, B]],
    [{ok, _} = erpc:call(N, application, ensure_all_started, [partisan], ?RPC_TIMEOUT) || N <- [A, B]],
    SpecB = erpc:call(B, partisan, node_spec, []),
    T0 = erlang:monotonic_time(millisecond),
    ok = erpc:call(A, partisan_peer_service, sync_join, [SpecB], ?RPC_TIMEOUT),
    %% sync_join waits for A's connections to B; B dials A after gossip, wait for those too.
    ok = erpc:call(B, ?MODULE, wait_fully_connected, [A, 10000], ?RPC_TIMEOUT),
    JoinMs = erlang:monotonic_time(millisecond) - T0,
    true = erpc:call(A, net_kernel, connect_node, [B], ?RPC_TIMEOUT),
    true = lists:member(B, erpc:call(A, erlang, nodes, [])),
    Info = #{started => erlang:system_time(second), controller => node_info(), a => erpc:call(A, ?MODULE, node_info, []),
             b => erpc:call(B, ?MODULE, node_info, []), join_ms => JoinMs,
             channels => erpc:call(A, partisan_config, channels, [])},
    Cases = [{Pl, S} || Pl <- maps:get(payloads, Cfg), S <- maps:get(senders, Cfg)],
    Runs = [{Rep, Case, T} || Rep <- lists:seq(1, maps:get(reps, Cfg)), Case <- Cases,
                              T <- maps:get(transports, Cfg)],
    io:format("~b runs of ~b+~b ms (A=~s, B=~s, partisan joined in ~b ms)~n",
              [length(Runs), maps:get(warmup_ms, Cfg), maps:get(duration_ms, Cfg), A, B, JoinMs]),
    Results = [begin
                   R = run_one(Cfg, A, B, Case, T),
                   io:format("  rep ~b ~-12ts ~-14ts ~12ts msg/s~ts~n",
                             [Rep, case_label(Case), transport_label(T),
                              fmt_int(round(maps:get(rate, R))), run_flags(R)]),
                   {{Case, T}, R}
               end || {Rep, Case, T} <- Runs],
    Report = report(Cfg, Info, Cases, Results),
    io:format("~n~ts~n", [Report]),
    File = write_report(Cfg, Report),
    io:format("report written to ~ts~n", [File]),
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
wire({partisan, P}, #{spread_keys := true}) -> {partisan, #{channel => channel(P), partition_key => spread}};
wire({partisan, P}, _) -> {partisan, #{channel => channel(P)}}.

run_one(Cfg, A, B, {Payload, NSenders}, T) ->
    #{window := W, ack_every := Ack, warmup_ms := Warm, duration_ms := Dur} = Cfg,
    MaxMs = Warm + Dur + 20000,
    Wire = wire(T, Cfg),
    StatsA0 = pstats(A, T),
    StatsB0 = pstats(B, T),
    Senders = erpc:call(A, ?MODULE, spawn_senders, [NSenders, Wire, Payload, W, MaxMs]),
    {Sampler, Receivers} = erpc:call(B, ?MODULE, spawn_receivers, [Senders, Wire, Ack, MaxMs]),
    PidA = maps:get(os_pid, erpc:call(A, ?MODULE, node_info, [])),
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

pstats(_, disterl) -> #{};
pstats(N, {partisan, _}) -> erpc:call(N, partisan, stats, []).

stats_delta(S0, S1) -> maps:map(fun(K, V) -> V - maps:get(K, S0, 0) end, S1).

%% -- report -----------------------------------------------------------------------------------

case_label({Payload, N}) -> io_lib:format("~ts x~b", [size_label(Payload), N]).

size_label(B) when B >= 1024, B rem 1024 =:= 0 -> io_lib:format("~b KiB", [B div 1024]);
size_label(B) -> io_lib:format("~b B", [B]).

transport_label(disterl) -> "disterl";
transport_label({partisan, P}) -> io_lib:format("partisan P=~b", [P]).

median(L) ->
    S = lists:sort(L),
    N = length(S),
    case N rem 2 of
        1 -> lists:nth(N div 2 + 1, S);
        0 -> (lists:nth(N div 2, S) + lists:nth(N div 2 + 1, S)) / 2
    end.

fmt_rate(R) when R >= 1.0e6 -> io_lib:format("~.2fM", [R / 1.0e6]);
fmt_rate(R) when R >= 1.0e3 -> io_lib:format("~.1fk", [R / 1.0e3]);
fmt_rate(R) -> integer_to_list(round(R)).

fmt_int(N) when is_integer(N) ->
    S = integer_to_list(abs(N)),
    Groups = lists:reverse(group3(lists:reverse(S))),
    [[$- || N < 0] | lists:join($,, Groups)].

group3([A, B, C | T]) -> [[C, B, A] | group3(T)];
group3([]) -> [];
group3(L) -> [lists:reverse(L)].

rates(Results, Key) -> [maps:get(rate, R) || {K, R} <- Results, K =:= Key].
runs(Results, Key) -> [R || {K, R} <- Results, K =:= Key].

cell(Results, Key) ->
    Rs = rates(Results, Key),
    io_lib:format("~ts (~ts–~ts)", [fmt_int(round(median(Rs))), fmt_rate(lists:min(Rs)),
                                    fmt_rate(lists:max(Rs))]).

report(Cfg, Info, Cases, Results) ->
    Ts = maps:get(transports, Cfg),
    PTs = [T || T = {partisan, _} <- Ts],
    Header = ["| payload | senders | ", [[transport_label(T), " msg/s | "] || T <- Ts],
              [[transport_label(T), " / disterl | "] || T <- PTs, lists:member(disterl, Ts)],
              "best partisan |\n"],
    Sep = ["|---|---:|", [["---:|"] || _ <- Ts], [["---:|"] || _ <- PTs, lists:member(disterl, Ts)],
           "---|\n"],
    Rows = [begin
                Med = fun(T) -> median(rates(Results, {Case, T})) end,
                Best = best(PTs, Med),
                ["| ", size_label(Payload), " | ", integer_to_list(N), " | ",
                 [[cell(Results, {Case, T}), " | "] || T <- Ts],
                 [[io_lib:format("~.2f", [Med(T) / Med(disterl)]), " | "]
                  || T <- PTs, lists:member(disterl, Ts)],
                 Best, " |\n"]
            end || Case = {Payload, N} <- Cases],
    Diag = diagnostics(Cases, Ts, Results),
    #{a := NA, controller := NC} = Info,
    Iso = fun(T) -> calendar:system_time_to_rfc3339(T, [{offset, "Z"}]) end,
    [io_lib:format("# Partisan data plane vs Distributed Erlang: message throughput~n~n", []),
     io_lib:format("Run: ~ts to ~ts on ~ts (~ts)~n~n",
                   [Iso(maps:get(started, Info)), Iso(erlang:system_time(second)),
                    string:trim(os:cmd("hostname")),
                                                 string:trim(os:cmd("uname -srm"))]),
     "## Environment\n\n",
     io_lib:format("- build: ~ts~n", [os:getenv("BENCH_BUILD_INFO", "unknown")]),
     io_lib:format("- OTP ~ts (erts ~ts), emu_flavor `~p`, emu_type `~p`~n",
                   [maps:get(otp, NA), maps:get(erts, NA), maps:get(emu_flavor, NA),
                    maps:get(emu_type, NA)]),
     io_lib:format("- nproc: ~ts; CPU: ~ts; logical processors available to the VM: ~p~n",
                   [string:trim(os:cmd("nproc")), cpu_model(),
                    maps:get(logical_processors_available, NA)]),
     io_lib:format("- peer VMs: schedulers ~b/~b online, dirty CPU ~b, dirty IO ~b; "
                   "partisan runtime: tokio multi-thread, 2 worker threads per node (built-in default)~n",
                   [maps:get(schedulers, NA), maps:get(schedulers_online, NA),
                    maps:get(dirty_cpu_schedulers, NA), maps:get(dirty_io_schedulers, NA)]),
     io_lib:format("- controller: `erl -name ~s` (schedulers ~b), idle during the runs; "
                   "3 VMs share the machine~n", [node(), maps:get(schedulers, NC)]),
     io_lib:format("- peer `args` passed to `peer:start_link/1`: `~ts`~n",
                   [lists:join(" ", redact(maps:get(args, Cfg)))]),
     io_lib:format("- partisan channels on both peers: `~0p` (join took ~b ms)~n",
                   [maps:get(channels, Info), maps:get(join_ms, Info)]),
     io_lib:format("- partisan senders' partition key: ~ts~n",
                   [case maps:get(spread_keys, Cfg) of
                        true -> "sender I uses `partition_key => I - 1` (BENCH_SPREAD_KEYS=1)";
                        false -> "none (the NIF hashes the caller's pid to pick the connection)"
                    end]),
     io_lib:format("- window W = ~b unacked messages per sender, ack every A = ~b messages; "
                   "warm-up ~b ms + measured ~b ms per run; ~b repetitions, interleaved~n~n",
                   [maps:get(window, Cfg), maps:get(ack_every, Cfg), maps:get(warmup_ms, Cfg),
                    maps:get(duration_ms, Cfg), maps:get(reps, Cfg)]),
     "## Throughput\n\n",
     "Messages delivered per second to the receivers on B: median of the repetitions "
     "(min–max in parentheses). Ratio = median partisan / median disterl.\n\n",
     Header, Sep, Rows, "\n",
     overall_best(Cases, PTs, lists:member(disterl, Ts), Results),
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

noise_note(Results) ->
    Fs = [maps:get(cpu_foreign, R) || {_, R} <- Results],
    Note = io_lib:format("CPU used by other processes during the measured windows (controller "
                         "included): median ~b %, max ~b % of one core.", [round(median(Fs)),
                                                                          round(lists:max(Fs))]),
    case lists:max(Fs) > 20 of
        true -> ["**Noisy machine:** ", Note, " Spreads are wide; rerun on an idle machine for "
                 "firm numbers.\n\n"];
        false -> [Note, "\n\n"]
    end.

best([], _) -> "-";
best(PTs, Med) ->
    {_, T} = lists:max([{Med(T), T} || T <- PTs]),
    transport_label(T).

redact(Args) -> redact(Args, []).
redact(["-setcookie", _ | T], Acc) -> redact(T, ["<cookie>", "-setcookie" | Acc]);
redact([H | T], Acc) -> redact(T, [H | Acc]);
redact([], Acc) -> lists:reverse(Acc).

cpu_model() ->
    case file:read_file("/proc/cpuinfo") of
        {ok, Bin} ->
            case re:run(Bin, "model name\\s*:\\s*([^\\n]*)", [{capture, all_but_first, binary}]) of
                {match, [M]} -> M;
                _ -> "unknown"
            end;
        _ -> "unknown"
    end.

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

write_report(Cfg, Report) ->
    Dir = maps:get(results_dir, Cfg),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    {{Y, Mo, D}, {H, Mi, S}} = calendar:universal_time(),
    Name = io_lib:format("throughput-~4..0b-~2..0b-~2..0b-~2..0b~2..0b~2..0b.md", [Y, Mo, D, H, Mi, S]),
    File = filename:join(Dir, lists:flatten(Name)),
    ok = file:write_file(File, unicode:characters_to_binary(Report)),
    File.

%% -- on the peers -----------------------------------------------------------------------------

%% @doc Facts about this VM, for the report.
node_info() ->
    Otp = erlang:system_info(otp_release),
    OtpFile = filename:join([code:root_dir(), "releases", Otp, "OTP_VERSION"]),
    OtpFull = case file:read_file(OtpFile) of
        {ok, V} -> string:trim(binary_to_list(V));
        _ -> Otp
    end,
    #{otp => OtpFull, erts => erlang:system_info(version),
      emu_flavor => erlang:system_info(emu_flavor), emu_type => erlang:system_info(emu_type),
      schedulers => erlang:system_info(schedulers),
      schedulers_online => erlang:system_info(schedulers_online),
      dirty_cpu_schedulers => erlang:system_info(dirty_cpu_schedulers),
      dirty_io_schedulers => erlang:system_info(dirty_io_schedulers),
      logical_processors_available => erlang:system_info(logical_processors_available),
      os_pid => list_to_integer(os:getpid())}.

%% @doc Waits until every partisan connection to `Node' is up.
wait_fully_connected(Node, Ms) ->
    Deadline = erlang:monotonic_time(millisecond) + Ms,
    wait_fc(Node, Deadline).

wait_fc(Node, Deadline) ->
    case partisan:is_fully_connected(Node) of
        true -> ok;
        false ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> {error, timeout};
                false -> receive after 5 -> wait_fc(Node, Deadline) end
            end
    end.

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
    Sys0 = system_busy(),
    CpuA0 = proc_cpu(PidA),
    CpuB0 = proc_cpu(PidB),
    {C0, T0} = read(Sampler),
    receive after Dur -> ok end,
    {C1, T1} = read(Sampler),
    CpuA1 = proc_cpu(PidA),
    CpuB1 = proc_cpu(PidB),
    Sys1 = system_busy(),
    Secs = (T1 - T0) / 1.0e6,
    CpuA = cpu_pct(CpuA0, CpuA1, Secs),
    CpuB = cpu_pct(CpuB0, CpuB1, Secs),
    Total = fun(M) -> lists:sum(maps:values(M)) end,
    %% Busy CPU of the whole machine not used by A or B (the controller, other workloads).
    Foreign = max(0.0, (Sys1 - Sys0) / ?HZ / Secs * 100 - Total(CpuA) - Total(CpuB)),
    #{count => C1 - C0, elapsed_us => T1 - T0, rate => (C1 - C0) / Secs,
      cpu_a => CpuA, cpu_b => CpuB, cpu_foreign => Foreign}.

%% Busy ticks of all CPUs (everything but idle and iowait), from /proc/stat.
system_busy() ->
    case file:read_file("/proc/stat") of
        {ok, <<"cpu ", Rest/binary>>} ->
            [Line | _] = binary:split(Rest, <<"\n">>),
            [User, Nice, Sys, _Idle, _IoWait | More] =
                [binary_to_integer(F) || F <- binary:split(Line, <<" ">>, [global, trim_all])],
            User + Nice + Sys + lists:sum(lists:sublist(More, 3));  % irq, softirq, steal
        _ ->
            0
    end.

%% CPU ticks (user + system) per thread group of an OS process, from /proc/PID/task/*/stat.
proc_cpu(Pid) ->
    Dir = "/proc/" ++ integer_to_list(Pid) ++ "/task",
    Tasks = case file:list_dir(Dir) of {ok, L} -> L; _ -> [] end,
    lists:foldl(
      fun(Tid, Acc) ->
              case file:read_file(filename:join([Dir, Tid, "stat"])) of
                  {ok, Bin} ->
                      case thread_ticks(Bin) of
                          {Group, Ticks} -> maps:update_with(Group, fun(V) -> V + Ticks end, Ticks, Acc);
                          error -> Acc
                      end;
                  _ -> Acc
              end
      end, #{sched => 0, io => 0, other => 0}, Tasks).

thread_ticks(Bin) ->
    try
        [Head, Rest] = string:split(Bin, ")", trailing),
        [_, Comm] = string:split(Head, "("),
        Fields = string:lexemes(Rest, " "),
        %% Fields after the comm start at field 3 (state); utime is field 14, stime 15.
        Ticks = binary_to_integer(lists:nth(12, Fields)) + binary_to_integer(lists:nth(13, Fields)),
        Group = case Comm of
            <<"partisan-io", _/binary>> -> io;
            _ ->
                case binary:match(Comm, <<"_scheduler">>) of
                    nomatch -> other;
                    _ -> sched
                end
        end,
        {Group, Ticks}
    catch _:_ -> error
    end.

cpu_pct(C0, C1, Secs) ->
    maps:map(fun(K, V) -> (V - maps:get(K, C0, 0)) / ?HZ / Secs * 100 end, C1).

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
