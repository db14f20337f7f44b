%% @doc Remote `gen_server' calls: `partisan_gen_server:call/3' over the Partisan data plane vs
%% `gen_server:call/3' over Distributed Erlang, to the same OTP `gen_server' on node B, in the
%% same run.
%%
%% `C' caller processes on node A (`BENCH_CALL_CALLERS', default "1,64") each call the server in
%% a closed loop (the next call leaves when the answer arrived) for `BENCH_CALL_MS' ms (default
%% 1000) after a warm-up; every call is timed with `erlang:monotonic_time/0'. Per run: calls/s
%% (all callers together), p50 and p99 of the call latency. `BENCH_REPS' repetitions (default
%% 3) interleaved over the transports; the report gives the median of the runs and their
%% min–max. The request and the answer are small terms (an integer). The peers run with their
%% default flags and again with schedulers that do not busy-wait (`BENCH_CALL_FLAGS').
%% `BENCH_CALL_OVERLAY=hyparview' runs partisan on HyParView (the two nodes are neighbours; off
%% the full mesh the OTP layer sends with `ack' through the overlay, one more hand-off to the
%% data plane's driver on each side).
-module(bench_call).

-export([main/0]).
%% Run on the peers.
-export([start_server/0, callers/4, init/1, handle_call/3, handle_cast/2]).

-import(bench_common, [env_int/2, env_ints/2, median/1, percentile/2, fmt_us/1, fmt_rate/1]).

-define(SERVER, bench_call_server).
-define(WARMUP_MS, 300).

main() ->
    Callers = env_ints("BENCH_CALL_CALLERS", [1, 64]),
    Ms = env_int("BENCH_CALL_MS", 1000),
    Reps = env_int("BENCH_REPS", 3),
    Max = env_int("BENCH_MAX_TOTAL_MS", 60000 + length(variants()) * length(Callers) * Reps * 2 * (Ms + ?WARMUP_MS + 3000)),
    bench_common:main("call", {Max, fun(W) -> run(W, Callers, Ms, Reps) end}).

run(W, CallerCounts, Ms, Reps) ->
    Started = erlang:system_time(second),
    Results = [begin
                   io:format("peers with ~ts~n", [Label]),
                   Pair = bench_latency:setup_pair(W, "call", Flags, #{}, overlay_env()),
                   try
                       #{b := B} = Pair,
                       {ok, _} = erpc:call(B, ?MODULE, start_server, []),
                       Runs = [{C, Rep, T} || C <- CallerCounts, Rep <- lists:seq(1, Reps),
                                              T <- [partisan, disterl]],
                       {Label, Pair, [measure(Pair, C, Rep, T, Ms) || {C, Rep, T} <- Runs]}
                   after
                       bench_latency:teardown_pair(Pair)
                   end
               end || {Label, Flags} <- variants()],
    report(Started, CallerCounts, Ms, Reps, Results).

overlay() -> os:getenv("BENCH_CALL_OVERLAY", "full_mesh").

overlay_env() ->
    case overlay() of
        "hyparview" -> #{peer_service_manager => partisan_hyparview_peer_service_manager};
        "full_mesh" -> #{};
        Other -> error({unknown_overlay, Other, "BENCH_CALL_OVERLAY is full_mesh or hyparview"})
    end.

%% BENCH_CALL_FLAGS: `;'-separated sets of extra peer flags; "" is the defaults. By default the
%% defaults and schedulers that do not busy-wait (on a small machine a busy-waiting scheduler
%% takes the core the data plane's threads need).
variants() ->
    case os:getenv("BENCH_CALL_FLAGS") of
        false -> [{"default flags", []},
                  {"+sbwt none +sbwtdcpu none +sbwtdio none",
                   ["+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none"]}];
        V -> [{case F of "" -> "default flags"; _ -> F end, string:lexemes(F, " ")}
              || F <- string:split(V, ";", all)]
    end.

measure(#{a := A, b := B, pid_a := PA, pid_b := PB}, C, Rep, T, Ms) ->
    %% Warm-up, untimed.
    _ = erpc:call(A, ?MODULE, callers, [T, B, C, ?WARMUP_MS], 60000),
    C0 = bench_common:cpu_begin([PA, PB]),
    {Calls, Lats} = erpc:call(A, ?MODULE, callers, [T, B, C, Ms], 60000),
    Cpu = bench_common:cpu_end(C0),
    %% Both peers' CPU (% of one core over the window) per call, in µs.
    CpuUs = maps:get(own, Cpu) / 100 * Ms * 1000 / max(1, Calls),
    S = #{rate => Calls * 1000 / Ms, p50 => percentile(Lats, 50), p99 => percentile(Lats, 99),
          cpu => CpuUs, foreign => maps:get(foreign, Cpu)},
    io:format("  ~3b callers rep ~b ~-8ts ~10ts calls/s  p50 ~ts  p99 ~ts~n",
              [C, Rep, T, fmt_rate(maps:get(rate, S)), fmt_us(maps:get(p50, S)), fmt_us(maps:get(p99, S))]),
    {C, T, S}.

report(Started, CallerCounts, Ms, Reps, Results) ->
    Env = bench_common:environment("Remote gen_server calls: partisan_gen_server vs gen_server over Distributed Erlang",
                                   Started, [{L, maps:get(info_a, P), maps:get(args, P)} || {L, P, _} <- Results]),
    Cell = fun(Vs, Fmt) -> io_lib:format("~ts (~ts–~ts)", [Fmt(median(Vs)), Fmt(lists:min(Vs)), Fmt(lists:max(Vs))]) end,
    Table = fun(Label, Res) ->
        Get = fun(C, T, K) -> [maps:get(K, S) || {C1, T1, S} <- Res, C1 =:= C, T1 =:= T] end,
        [io_lib:format("| ~ts | ~b | ~ts | ~ts | ~ts | ~ts | ~.1f |~n",
                       [Label, C, T, Cell(Get(C, T, rate), fun bench_common:fmt_rate/1),
                        Cell(Get(C, T, p50), fun bench_common:fmt_us/1), Cell(Get(C, T, p99), fun bench_common:fmt_us/1),
                        median(Get(C, T, cpu))])
         || C <- CallerCounts, T <- [partisan, disterl]]
    end,
    Ratio = fun(Label, Res) ->
        Get = fun(C, T, K) -> [maps:get(K, S) || {C1, T1, S} <- Res, C1 =:= C, T1 =:= T] end,
        [io_lib:format("| ~ts | ~b | ~.2f× | ~.2f× | ~.2f× | ~.2f× |~n",
                       [Label, C, median(Get(C, partisan, rate)) / median(Get(C, disterl, rate)),
                        median(Get(C, partisan, p50)) / median(Get(C, disterl, p50)),
                        median(Get(C, partisan, p99)) / median(Get(C, disterl, p99)),
                        median(Get(C, partisan, cpu)) / median(Get(C, disterl, cpu))])
         || C <- CallerCounts]
    end,
    Foreign = [maps:get(foreign, S) || {_, _, Res} <- Results, {_, _, S} <- Res],
    Report0 = [Env,
               io_lib:format("- method: closed-loop callers on A calling one gen_server on B; ~b ms "
                             "per run after ~b ms of warm-up; ~b repetitions interleaved over the "
                             "transports; small integer request and answer; partisan overlay: ~ts~n~n",
                             [Ms, ?WARMUP_MS, Reps, overlay()]),
               "## Calls/s and call latency\n\n"
               "Median over the runs (min–max of the runs).\n\n"
               "| peer flags | callers | transport | calls/s | p50 | p99 | CPU µs/call (both peers) |\n|---|---:|---|---:|---:|---:|---:|\n",
               [Table(L, R) || {L, _, R} <- Results],
               "\n## partisan / disterl\n\n"
               "calls/s above 1: partisan does more; latency and CPU below 1: partisan is faster / cheaper.\n\n"
               "| peer flags | callers | calls/s | p50 | p99 | CPU/call |\n|---|---:|---:|---:|---:|---:|\n",
               [Ratio(L, R) || {L, _, R} <- Results], "\n",
               bench_common:noise_note(Foreign)],
    %% Named by overlay, so the README's full-mesh table never takes a HyParView run.
    Base = bench_common:write_report(case overlay() of "full_mesh" -> "call"; O -> "call-" ++ O end, Report0),
    ok = bench_common:finish_report(Base, Report0, ""),
    ok.

%% -- on the peers ---------------------------------------------------------------------------

%% @doc Starts the server the callers call (registered, not linked to the rpc that started it).
start_server() ->
    gen_server:start({local, ?SERVER}, ?MODULE, [], []).

init([]) -> {ok, 0}.
handle_call(N, _From, S) -> {reply, N, S + 1}.
handle_cast(_, S) -> {noreply, S}.

%% @doc `C' callers calling `{?SERVER, B}' over transport `T' for `Ms' ms: the number of calls
%% and the latency of each (µs).
callers(T, B, C, Ms) ->
    Self = self(),
    Deadline = erlang:monotonic_time(millisecond) + Ms,
    Pids = [spawn_link(fun() -> Self ! {self(), loop(T, B, Deadline, 0, [])} end) || _ <- lists:seq(1, C)],
    Results = [receive {P, R} -> R end || P <- Pids],
    {lists:sum([N || {N, _} <- Results]), lists:append([L || {_, L} <- Results])}.

loop(T, B, Deadline, N, Acc) ->
    T0 = erlang:monotonic_time(),
    N = call(T, {?SERVER, B}, N),
    Us = erlang:convert_time_unit(erlang:monotonic_time() - T0, native, nanosecond) / 1000,
    case erlang:monotonic_time(millisecond) >= Deadline of
        true -> {N + 1, [Us | Acc]};
        false -> loop(T, B, Deadline, N + 1, [Us | Acc])
    end.

call(partisan, Server, Req) -> partisan_gen_server:call(Server, Req, 5000);
call(disterl, Server, Req) -> gen_server:call(Server, Req, 5000).
