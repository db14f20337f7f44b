%% @doc The USENIX ATC'19 Partisan echo experiment over the link emulator: N concurrent actors on
%% A each send a payload to their own echo process on B and wait for the echo before sending the
%% next one. Round trips of 1 ms and 20 ms are made by `partisan_linkemu' proxies (one-way delay
%% RTT/2, bounded window per connection and direction, see native/partisan_linkemu):
%%
%%   * disterl: A's `-epmd_module bench_epmd' returns the port of a proxy in front of B's
%%     distribution listener, so the one A–B connection runs through it;
%%   * partisan: A joins B with B's node spec rewritten to a proxy in front of B's listener, and
%%     B joins A with A's spec rewritten to a proxy in front of A's (each node dials its own
%%     connections: channel × parallelism of them, every one through a proxy).
%%
%% Reported per case: round trips per second (and payload MB/s one way), p50/p99 round trip, and
%% the ratios partisan / disterl (throughput) and disterl / partisan (latency). Paper: up to 38×
%% throughput and 13.5× lower latency at 20 ms RTT with parallelism 16.
-module(bench_echo).

-export([main/0]).
-export([spawn_echoes/3, run_actors/6]).

-import(bench_common, [env_int/2, env_ints/2, median/1, percentile/2, fmt_us/1, size_label/1]).

-define(RPC_TIMEOUT, 15000).
-define(MiB, 1048576).

main() ->
    Full = env_int("BENCH_ECHO_FULL", 0) =:= 1,
    Cfg = #{actors => env_ints("BENCH_ECHO_ACTORS", case Full of true -> [16, 32, 64, 128]; false -> [16] end),
            payloads => env_ints("BENCH_ECHO_PAYLOADS", [512 * 1024, 8 * ?MiB]),
            rtts => env_ints("BENCH_ECHO_RTTS", [1, 20]),
            pars => env_ints("BENCH_ECHO_PARALLELISM", case Full of true -> [1, 8, 16]; false -> [1, 16] end),
            warmup_ms => env_int("BENCH_WARMUP_MS", 1000),
            duration_ms => env_int("BENCH_DURATION_MS", 3000),
            reps => env_int("BENCH_REPS", 1),
            window => env_int("BENCH_LINK_WINDOW", 8 * ?MiB),
            rate_mbit => env_int("BENCH_LINK_RATE_MBIT", 0)},
    Runs = length(maps:get(actors, Cfg)) * length(maps:get(payloads, Cfg)) * length(maps:get(rtts, Cfg))
        * (length(maps:get(pars, Cfg)) + 1) * maps:get(reps, Cfg),
    Max = env_int("BENCH_MAX_TOTAL_MS", 90000 + Runs * (maps:get(warmup_ms, Cfg) + maps:get(duration_ms, Cfg) + 15000)),
    bench_common:main("echo", {Max, fun(W) -> run(W, Cfg) end}).

chan(P) -> list_to_atom("echo" ++ integer_to_list(P)).

tlabel(disterl) -> "disterl";
tlabel({partisan, P}) -> io_lib:format("partisan P=~b", [P]).

run(W, Cfg) ->
    Started = erlang:system_time(second),
    Ts = [{partisan, P} || P <- maps:get(pars, Cfg)] ++ [disterl],
    Out = [begin
               io:format("RTT ~b ms~n", [Rtt]),
               with_link(W, Cfg, Rtt, fun(Ctx) ->
                   [begin
                        R = run_one(Ctx, Cfg, N, Pl, T),
                        io:format("  rep ~b ~3b actors ~-8ts ~-14ts ~9.1f rt/s ~8.1f MB/s p50 ~ts p99 ~ts~ts~n",
                                  [Rep, N, size_label(Pl), tlabel(T), maps:get(rate, R),
                                   maps:get(mbs, R), fmt_us(maps:get(p50, R)), fmt_us(maps:get(p99, R)),
                                   case maps:get(retries, R) of 0 -> ""; X -> io_lib:format(" retries=~b", [X]) end]),
                        {{Rtt, N, Pl, T}, R}
                    end || Rep <- lists:seq(1, maps:get(reps, Cfg)), N <- maps:get(actors, Cfg),
                           Pl <- maps:get(payloads, Cfg), T <- Ts]
               end)
           end || Rtt <- maps:get(rtts, Cfg)],
    Results = lists:append([Rs || {_, Rs} <- Out]),
    Links = [L || {L, _} <- Out],
    report(Cfg, Started, Ts, Results, Links).

%% Starts A and B, partisan, the proxies and both joins for one RTT; runs `Fun'; stops all.
with_link(W, Cfg, Rtt, Fun) ->
    Tag = os:getpid() ++ "_" ++ integer_to_list(Rtt),
    ArgsB = bench_common:peer_args([]),
    ArgsA = ArgsB ++ ["-epmd_module", "bench_epmd"],
    {PeerA, A} = bench_common:start_peer(W, "echo_a_" ++ Tag, ArgsA),
    {PeerB, B} = bench_common:start_peer(W, "echo_b_" ++ Tag, ArgsB),
    Proxies = [],
    try
        Channels = maps:from_list([{chan(P), #{parallelism => P}} || P <- maps:get(pars, Cfg)]),
        SpecA = bench_common:start_partisan(A, #{channels => Channels}),
        SpecB = bench_common:start_partisan(B, #{channels => Channels}),
        Opts = #{delay_ms => Rtt / 2, window => maps:get(window, Cfg), rate_mbit => maps:get(rate_mbit, Cfg)},
        {PortPA, PxA} = bench_common:linkemu_start(W, spec_port(SpecA), Opts),
        {PortPB, PxB} = bench_common:linkemu_start(W, spec_port(SpecB), Opts),
        [BName, _] = string:split(atom_to_list(B), "@"),
        {port, DistB, _} = erl_epmd:port_please(BName, {127, 0, 0, 1}),
        {PortDB, PxD} = bench_common:linkemu_start(W, DistB, Opts),
        Pxs = [PxA, PxB, PxD],
        try
            %% Both joins before either side's gossip can arrive (that takes a round trip through
            %% a proxy): every link of both nodes is dialed through a proxy.
            ok = erpc:call(A, partisan_peer_service, join, [via(SpecB, PortPB)], ?RPC_TIMEOUT),
            ok = erpc:call(B, partisan_peer_service, join, [via(SpecA, PortPA)], ?RPC_TIMEOUT),
            ok = erpc:call(A, bench_common, wait_fully_connected, [B, 20000], 30000),
            ok = erpc:call(B, bench_common, wait_fully_connected, [A, 20000], 30000),
            ok = erpc:call(A, bench_common, bench_epmd_set, [B, PortDB]),
            true = erpc:call(A, net_kernel, connect_node, [B], ?RPC_TIMEOUT),
            Stats0 = [bench_common:linkemu_stats(P) || P <- Pxs],
            Ctx = #{a => A, b => B, pid_a => bench_common:os_pid(A), pid_b => bench_common:os_pid(B),
                    info_a => erpc:call(A, bench_common, node_info, []), args => ArgsA, rtt => Rtt},
            Rs = Fun(Ctx),
            Links = #{rtt => Rtt, links => lists:zip(["in front of A (partisan, B's links)",
                                                      "in front of B (partisan, A's links)",
                                                      "in front of B (disterl)"], Stats0),
                      ctx => Ctx, ping => link_ping(Ctx, hd(maps:get(pars, Cfg)))},
            {Links, Rs}
        after
            [bench_common:linkemu_stop(P) || P <- Pxs]
        end
    after
        _ = Proxies,
        bench_common:stop_peer(PeerB),
        bench_common:stop_peer(PeerA)
    end.

spec_port(#{listen_addrs := [#{port := P} | _]}) -> P.

via(Spec, Port) -> Spec#{listen_addrs => [#{ip => {127, 0, 0, 1}, port => Port}]}.

%% The round trip of a 10 B ping through the proxies, both transports (checks the emulated RTT).
link_ping(#{a := A, b := B}, P1) ->
    maps:from_list(
      [begin
           Wire = case T of disterl -> disterl; partisan -> {partisan, #{channel => chan(P1)}} end,
           Echo = erpc:call(B, bench_latency, spawn_echo, [Wire, 30000]),
           Rtts = erpc:call(A, bench_latency, ping_run, [Wire, Echo, 10, 50, 10000], 30000),
           erpc:call(B, bench_latency, stop, [Echo]),
           {T, median(Rtts)}
       end || T <- [disterl, partisan]]).

run_one(#{a := A, b := B, pid_a := PA, pid_b := PB}, Cfg, N, Payload, T) ->
    #{warmup_ms := Warm, duration_ms := Dur} = Cfg,
    Wire = case T of disterl -> disterl; {partisan, P} -> {partisan, #{channel => chan(P)}} end,
    Echoes = erpc:call(B, ?MODULE, spawn_echoes, [N, Wire, Warm + Dur + 60000]),
    C0 = bench_common:cpu_begin([PA, PB]),
    Res = erpc:call(A, ?MODULE, run_actors, [Wire, Echoes, Payload, Warm, Dur, 40000],
                    Warm + Dur + 60000),
    Cpu = bench_common:cpu_end(C0),
    [exit_echo(B, E) || E <- Echoes],
    #{rtts := Rtts, retries := Retries, errors := Errors} = Res,
    Count = length(Rtts),
    Rate = Count / (Dur / 1000),
    #{rate => Rate, mbs => Rate * Payload / 1.0e6, count => Count, retries => Retries, errors => Errors,
      p50 => pct(Rtts, 50), p99 => pct(Rtts, 99), foreign => maps:get(foreign, Cpu),
      cpu => maps:get(own, Cpu)}.

pct([], _) -> 0.0;
pct(L, P) -> percentile(L, P).

exit_echo(B, E) -> erpc:cast(B, erlang, exit, [E, kill]).

%% -- report -------------------------------------------------------------------------------------

report(Cfg, Started, Ts, Results, Links) ->
    Med = fun(K, Key) -> median([maps:get(Key, R) || {K1, R} <- Results, K1 =:= K]) end,
    Keys = lists:usort([{Rtt, N, Pl} || {{Rtt, N, Pl, _}, _} <- Results]),
    PTs = [T || T = {partisan, _} <- Ts],
    Head = ["| RTT | actors | payload | ", [[tlabel(T), " rt/s (MB/s) | "] || T <- Ts],
            [[tlabel(T), " p50 / p99 | "] || T <- Ts],
            "best partisan thr / disterl | disterl p50 / best partisan p50 |\n",
            "|---:|---:|---|", [["---:|"] || _ <- Ts], [["---:|"] || _ <- Ts], "---:|---:|\n"],
    Rows = [begin
                Cell = fun(T) -> io_lib:format("~.1f (~b)", [Med({Rtt, N, Pl, T}, rate),
                                                             round(Med({Rtt, N, Pl, T}, mbs))]) end,
                Lat = fun(T) -> [fmt_us(Med({Rtt, N, Pl, T}, p50)), " / ", fmt_us(Med({Rtt, N, Pl, T}, p99))] end,
                {BestRate, BestT} = lists:max([{Med({Rtt, N, Pl, T}, rate), T} || T <- PTs]),
                DR = Med({Rtt, N, Pl, disterl}, rate),
                ["| ", integer_to_list(Rtt), " ms | ", integer_to_list(N), " | ", size_label(Pl), " | ",
                 [[Cell(T), " | "] || T <- Ts], [[Lat(T), " | "] || T <- Ts],
                 io_lib:format("**~.2f×** (~ts)", [BestRate / max(1.0e-9, DR), tlabel(BestT)]), " | ",
                 io_lib:format("~.2f×", [Med({Rtt, N, Pl, disterl}, p50) / max(1.0e-9, Med({Rtt, N, Pl, BestT}, p50))]),
                 " |\n"]
            end || {Rtt, N, Pl} <- Keys],
    LinkRows = [[io_lib:format("- RTT ~b ms (one-way delay ~.1f ms per proxy): measured 10 B round trip through the "
                               "proxies: disterl ~ts, partisan ~ts; connections accepted: ~ts~n",
                               [maps:get(rtt, L), maps:get(rtt, L) / 2,
                                fmt_us(maps:get(disterl, maps:get(ping, L))),
                                fmt_us(maps:get(partisan, maps:get(ping, L))),
                                lists:join(", ", [io_lib:format("~ts ~b", [Name, maps:get(accepted, S, -1)])
                                                  || {Name, S} <- maps:get(links, L)])])]
                || L <- Links],
    Errors = [io_lib:format("- ~p: errors ~p~n", [K, E]) || {K, #{errors := E}} <- Results, E =/= []],
    Ctx = maps:get(ctx, hd(Links)),
    Env = bench_common:environment("ATC'19 echo experiment over the link emulator: partisan vs disterl",
                                   Started, [{"", maps:get(info_a, Ctx), maps:get(args, Ctx)}]),
    Report0 = [Env,
               io_lib:format("- link emulator: `partisan_linkemu`, one-way delay RTT/2 in each direction, "
                             "window ~ts per connection and direction (a byte counts until one delay after "
                             "its delivery), bandwidth cap ~ts; proxies share the machine~n",
                             [size_label(maps:get(window, Cfg)),
                              case maps:get(rate_mbit, Cfg) of 0 -> "none"; R -> io_lib:format("~b Mbit/s", [R]) end]),
               io_lib:format("- method: each actor on A sends the payload to its own echo process on B "
                             "and waits for the echo; warm-up ~b ms, round trips completed in the next "
                             "~b ms counted; ~b repetition(s); partisan channels `echoP` with parallelism P "
                             "(the actor's pid picks the connection)~n",
                             [maps:get(warmup_ms, Cfg), maps:get(duration_ms, Cfg), maps:get(reps, Cfg)]),
               LinkRows, "\n",
               "## Echo throughput and latency\n\n"
               "rt/s: round trips per second (all actors); MB/s: payload bytes per second, one way. "
               "Ratios: best partisan parallelism vs disterl (paper: up to 38× throughput, 13.5× lower "
               "latency at 20 ms RTT).\n\n",
               Head, Rows, "\n", Errors,
               bench_common:noise_note([maps:get(foreign, R) || {_, R} <- Results])],
    Base = bench_common:write_report("echo", Report0),
    Data = [["# case ", lists:join(" ", [["\"", tlabel(T), "\""] || T <- Ts]), "\n"],
            [[io_lib:format("\"~b ms ~bx ~ts\" ", [Rtt, N, size_label(Pl)]),
              lists:join(" ", [io_lib:format("~.3f", [Med({Rtt, N, Pl, T}, mbs)]) || T <- Ts]), "\n"]
             || {Rtt, N, Pl} <- Keys]],
    Plot = bench_common:plot(Base, Data,
        ["set title 'Echo throughput over the link emulator (payload MB/s one way)'\n"
         "set style data histograms\nset style histogram clustered gap 1\n"
         "set style fill solid 0.8 border -1\nset logscale y\nset ylabel 'MB/s (log)'\n"
         "set xtics rotate by -20\nset key top left\nset grid ytics\nplot ",
         lists:join(", ", [io_lib:format("'@DAT@' using ~b:xtic(1) title columnheader(~b)", [I + 1, I + 1])
                           || I <- lists:seq(1, length(Ts))])]),
    ok = bench_common:finish_report(Base, Report0, Plot),
    case Errors of [] -> ok; _ -> {failed, "some actors reported errors"} end.

%% -- on the peers -------------------------------------------------------------------------------

send(disterl, Dest, Msg) -> Dest ! Msg, ok;
send({partisan, Opts}, Dest, Msg) -> partisan:forward_message(Dest, Msg, Opts).

%% Sends, retrying on a full queue (1 ms back-off) until `Deadline'. Returns retries or an error.
send_retry(Wire, Dest, Msg, Deadline, Retries) ->
    case send(Wire, Dest, Msg) of
        ok -> {ok, Retries};
        {error, queue_full} ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> {error, queue_full};
                false -> receive after 1 -> send_retry(Wire, Dest, Msg, Deadline, Retries + 1) end
            end;
        Err -> Err
    end.

%% @doc `N' echo processes: each answers `{ping, From, Bin}' with `{pong, Bin}'.
spawn_echoes(N, Wire, MaxMs) ->
    [spawn(fun() -> echo(Wire, MaxMs) end) || _ <- lists:seq(1, N)].

echo(Wire, MaxMs) ->
    receive
        {ping, From, Bin} ->
            _ = send_retry(Wire, From, {pong, Bin}, erlang:monotonic_time(millisecond) + MaxMs, 0),
            echo(Wire, MaxMs)
    after MaxMs -> ok
    end.

%% @doc Runs one actor per echo process for `Warm + Dur' ms; returns the round trips (µs) that
%% completed in the measured window `[Warm, Warm + Dur)', the queue-full retries and any errors.
%% An actor's last round trip may end after the window (bounded by `DrainMs').
run_actors(Wire, Echoes, Payload, Warm, Dur, DrainMs) ->
    Bin = binary:copy(<<"e">>, Payload),
    T0 = erlang:monotonic_time(microsecond),
    From = T0 + Warm * 1000,
    To = From + Dur * 1000,
    Self = self(),
    Pids = [spawn(fun() -> Self ! {actor, self(), actor(Wire, E, Bin, From, To, DrainMs, [], 0)} end)
            || E <- Echoes],
    Rs = [receive {actor, P, R} -> R after Warm + Dur + DrainMs + 5000 -> {[], 0, [no_answer]} end
          || P <- Pids],
    #{rtts => lists:append([R || {R, _, _} <- Rs]), retries => lists:sum([X || {_, X, _} <- Rs]),
      errors => lists:usort(lists:append([E || {_, _, E} <- Rs]))}.

actor(Wire, Echo, Bin, From, To, DrainMs, Acc, Retries) ->
    S = erlang:monotonic_time(microsecond),
    case S >= To of
        true -> {Acc, Retries, []};
        false ->
            case send_retry(Wire, Echo, {ping, self(), Bin}, S div 1000 + DrainMs, Retries) of
                {ok, R} ->
                    receive
                        {pong, _} ->
                            E = erlang:monotonic_time(microsecond),
                            Acc1 = case E >= From andalso E < To of
                                true -> [float(E - S) | Acc];
                                false -> Acc
                            end,
                            actor(Wire, Echo, Bin, From, To, DrainMs, Acc1, R)
                    after DrainMs ->
                        {Acc, R, [pong_timeout]}
                    end;
                {error, Why} ->
                    {Acc, Retries, [Why]}
            end
    end.
