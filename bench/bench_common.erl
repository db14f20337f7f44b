%% @doc Shared helpers of the benchmarks in `bench/': configuration from the environment, the
%% watchdog, peer nodes, partisan set-up, CPU accounting from /proc (own and foreign load),
%% statistics, formatting, the environment section of every report (emulator flags included),
%% report files, gnuplot plots and the link emulator (`partisan_linkemu') processes.
%%
%% Every scenario module exports `main/0', run by `bench/run.sh SCENARIO' on a controller node
%% (`erl -name bench@127.0.0.1'); functions that run on peers are exported and loaded there
%% through `-pa'.
-module(bench_common).

-export([main/2, env_int/2, env_ints/2, env_str/2, env_float/2, start_peer/3, stop_peer/1,
         peer_args/1, start_partisan/2, join_partisan/2, node_info/0, wait_fully_connected/2,
         wait_fully_connected_all/2, os_pid/1]).
-export([system_busy/0, proc_cpu/1, cpu_pct/3, cpu_begin/1, cpu_end/1, hz/0]).
-export([median/1, percentile/2, mean/1, fmt_rate/1, fmt_int/1, fmt_us/1, size_label/1,
         redact/1, cpu_model/0, environment/3, write_report/2, finish_report/3, plot/3, noise_note/1,
         foreign_summary/1]).
-export([linkemu_start/3, linkemu_stats/1, linkemu_stop/1, free_port/0]).
-export([bench_epmd_set/2]).

-define(HZ, 100).                 % USER_HZ: the unit of /proc CPU times on Linux
-define(RPC_TIMEOUT, 15000).

hz() -> ?HZ.

%% -- entry point, watchdog ----------------------------------------------------------------------

%% @doc Runs `Fun(Watchdog)' under a watchdog of `MaxMs' and halts: 0 on `ok', 2 on
%% `{failed, Why}', 1 on a crash, 3 when the watchdog fires. `Fun' registers every peer and
%% proxy it starts with `Watchdog ! {peer, Pid}' / `{proxy, OsPid}' so they are stopped.
main(Name, {MaxMs, Fun}) ->
    process_flag(trap_exit, true),
    ok = io:setopts(standard_io, [{encoding, unicode}]),
    Watchdog = spawn_link(fun() -> watchdog(Name, MaxMs) end),
    put(bench_watchdog, Watchdog),
    Code = try Fun(Watchdog) of
               ok -> 0;
               {failed, Why} -> io:format(standard_error, "~s FAILED: ~ts~n", [Name, Why]), 2
           catch
               Class:Reason:Stack ->
                   io:format(standard_error, "~s crashed: ~p:~p~n~p~n", [Name, Class, Reason, Stack]),
                   1
           end,
    unlink(Watchdog),
    Watchdog ! {finish, self()},
    receive {finished, Watchdog} -> ok after 10000 -> ok end,
    halt(Code).

watchdog(Name, Ms) ->
    erlang:send_after(Ms, self(), timeout),
    watchdog_loop(Name, Ms, [], []).

%% Learns the peers and proxies as they start, so it can stop them before halting.
watchdog_loop(Name, Ms, Peers, Proxies) ->
    receive
        {peer, Pid} -> watchdog_loop(Name, Ms, [Pid | Peers], Proxies);
        {proxy, OsPid} -> watchdog_loop(Name, Ms, Peers, [OsPid | Proxies]);
        {proxy_done, OsPid} -> watchdog_loop(Name, Ms, Peers, Proxies -- [OsPid]);
        {finish, From} ->
            %% Normal end: anything still running (a crash path) is stopped here.
            cleanup(Peers, Proxies),
            From ! {finished, self()};
        timeout ->
            io:format(standard_error, "watchdog: ~s exceeded ~b ms; stopping peers, halting~n",
                      [Name, Ms]),
            cleanup(Peers, Proxies),
            halt(3)
    end.

cleanup(Peers, Proxies) ->
    [kill_os_pid(P) || P <- Proxies],
    Live = [P || P <- Peers, is_process_alive(P)],
    [spawn(fun() -> catch peer:stop(P) end) || P <- Live],
    Deadline = erlang:monotonic_time(millisecond) + 5000,
    _ = [receive after 10 -> ok end || _ <- lists:seq(1, 500),
                                       lists:any(fun is_process_alive/1, Live),
                                       erlang:monotonic_time(millisecond) < Deadline],
    ok.

kill_os_pid(OsPid) when is_integer(OsPid) ->
    _ = os:cmd("kill " ++ integer_to_list(OsPid) ++ " 2>/dev/null"),
    ok.

%% -- environment knobs --------------------------------------------------------------------------

env_int(Name, Default) ->
    case os:getenv(Name) of
        false -> Default;
        "" -> Default;
        V -> list_to_integer(string:trim(V))
    end.

env_float(Name, Default) ->
    case os:getenv(Name) of
        false -> Default;
        "" -> Default;
        V -> try list_to_float(string:trim(V)) catch _:_ -> float(list_to_integer(string:trim(V))) end
    end.

env_ints(Name, Default) ->
    case os:getenv(Name) of
        false -> Default;
        "" -> Default;
        V -> [list_to_integer(string:trim(X)) || X <- string:lexemes(V, ",")]
    end.

env_str(Name, Default) ->
    case os:getenv(Name) of
        false -> Default;
        "" -> Default;
        V -> V
    end.

%% -- peers and partisan -------------------------------------------------------------------------

%% @doc The `args' of every peer: no disterl mesh, partisan's and the benchmarks' code, the
%% controller's cookie, then `Extra' (e.g. `["+sbwt", "none"]').
peer_args(Extra) ->
    BenchDir = filename:dirname(code:which(?MODULE)),
    PartisanEbin = filename:dirname(code:which(partisan)),
    ["-connect_all", "false", "-pa", PartisanEbin, "-pa", BenchDir,
     "-setcookie", atom_to_list(erlang:get_cookie())] ++ Extra.

%% @doc Starts a peer `Name@127.0.0.1' (registered with the watchdog).
start_peer(Watchdog, Name, Args) ->
    {ok, Peer, Node} = peer:start_link(#{name => list_to_atom(Name), host => "127.0.0.1",
                                         longnames => true, args => Args, wait_boot => 30000}),
    Watchdog ! {peer, Peer},
    {Peer, Node}.

stop_peer(Peer) ->
    catch peer:stop(Peer),
    ok.

%% @doc Sets partisan's env (`Env' is a map of keys) on `Node' and starts the application.
start_partisan(Node, Env0) ->
    Env = maps:merge(Env0, extra_partisan_env()),
    [ok = erpc:call(Node, application, set_env, [partisan, K, V]) || {K, V} <- maps:to_list(Env)],
    {ok, _} = erpc:call(Node, application, ensure_all_started, [partisan], ?RPC_TIMEOUT),
    erpc:call(Node, partisan, node_spec, []).

%% BENCH_PARTISAN_ENV: an Erlang map of more partisan config for every peer, e.g.
%% `#{io_threads => 1}' (for experiments; reports show the peers' config).
extra_partisan_env() ->
    case os:getenv("BENCH_PARTISAN_ENV", "") of
        "" -> #{};
        Str ->
            {ok, Tokens, _} = erl_scan:string(Str ++ "."),
            {ok, [Expr]} = erl_parse:parse_exprs(Tokens),
            {value, Map, _} = erl_eval:expr(Expr, []),
            Map
    end.

%% @doc `A' joins `B' (with `SpecB', possibly rewritten to a proxy) and waits until both are
%% fully connected to each other.
join_partisan(A, {B, SpecB}) ->
    ok = erpc:call(A, partisan_peer_service, join, [SpecB], ?RPC_TIMEOUT),
    ok = erpc:call(A, ?MODULE, wait_fully_connected, [B, 10000], ?RPC_TIMEOUT),
    ok = erpc:call(B, ?MODULE, wait_fully_connected, [A, 10000], ?RPC_TIMEOUT).

%% @doc Waits until every partisan connection to `Node' is up (polls every millisecond).
wait_fully_connected(Node, Ms) ->
    wait_fully_connected_all([Node], Ms).

wait_fully_connected_all(Nodes, Ms) ->
    Deadline = erlang:monotonic_time(millisecond) + Ms,
    wait_fc(Nodes, Deadline).

wait_fc(Nodes, Deadline) ->
    case lists:all(fun partisan:is_fully_connected/1, Nodes) of
        true -> ok;
        false ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> {error, timeout};
                false -> receive after 1 -> wait_fc(Nodes, Deadline) end
            end
    end.

os_pid(Node) -> maps:get(os_pid, erpc:call(Node, ?MODULE, node_info, [])).

%% @doc Facts about this VM, for the report (the emulator flags among them).
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
      scheduler_bind_type => erlang:system_info(scheduler_bind_type),
      emu_args => emu_args(),
      os_pid => list_to_integer(os:getpid())}.

%% The emulator flags this VM was started with: the `+' flags of the beam process's command line
%% (the emulator consumes them, so `init:get_arguments/0' does not show them).
emu_args() ->
    case file:read_file("/proc/self/cmdline") of
        {ok, Bin} ->
            Args = [binary_to_list(A) || A <- binary:split(Bin, <<0>>, [global, trim_all])],
            %% The emulator's own arguments come before `--' (the rest is for init).
            Emu = lists:takewhile(fun(A) -> A =/= "--" end, tl(Args)),
            lists:flatten(lists:join(" ", [case A of [$- | F] -> [$+ | F]; _ -> A end || A <- Emu]));
        _ -> "unknown"
    end.

%% @doc On a peer: points disterl connections to `Node' at `Port' (see `bench_epmd').
bench_epmd_set(Node, Port) ->
    persistent_term:put({bench_epmd, Node}, Port).

%% -- CPU accounting -----------------------------------------------------------------------------

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

%% CPU ticks (user + system) per thread group of an OS process, from /proc/PID/task/*/stat:
%% BEAM schedulers, partisan-io (tokio) threads, the rest.
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

%% @doc Starts a CPU window over the OS processes `Pids' (the peers under test).
cpu_begin(Pids) ->
    {erlang:monotonic_time(microsecond), system_busy(), [{P, proc_cpu(P)} || P <- Pids]}.

%% @doc Ends it: `#{own => % of one core used by Pids, foreign => % used by everything else}'.
cpu_end({T0, Sys0, Procs0}) ->
    Procs1 = [{P, proc_cpu(P)} || {P, _} <- Procs0],
    Sys1 = system_busy(),
    Secs = max(1.0e-3, (erlang:monotonic_time(microsecond) - T0) / 1.0e6),
    Own = lists:sum([lists:sum(maps:values(cpu_pct(C0, C1, Secs)))
                     || {{_, C0}, {_, C1}} <- lists:zip(Procs0, Procs1)]),
    #{own => Own, foreign => max(0.0, (Sys1 - Sys0) / ?HZ / Secs * 100 - Own)}.

%% -- statistics and formatting ------------------------------------------------------------------

median(L) ->
    S = lists:sort(L),
    N = length(S),
    case N rem 2 of
        1 -> lists:nth(N div 2 + 1, S);
        0 -> (lists:nth(N div 2, S) + lists:nth(N div 2 + 1, S)) / 2
    end.

%% Nearest-rank percentile (P in 0..100) of a non-empty list.
percentile(L, P) ->
    S = lists:sort(L),
    N = length(S),
    lists:nth(max(1, min(N, ceil(P / 100 * N))), S).

mean([]) -> 0.0;
mean(L) -> lists:sum(L) / length(L).

fmt_rate(R) when R >= 1.0e6 -> io_lib:format("~.2fM", [R / 1.0e6]);
fmt_rate(R) when R >= 1.0e3 -> io_lib:format("~.1fk", [R / 1.0e3]);
fmt_rate(R) when R >= 10 -> integer_to_list(round(R));
fmt_rate(R) -> io_lib:format("~.2f", [float(R)]).

%% Microseconds, human-sized.
fmt_us(Us) when Us >= 10000 -> io_lib:format("~.1f ms", [Us / 1000]);
fmt_us(Us) when Us >= 1000 -> io_lib:format("~.2f ms", [Us / 1000]);
fmt_us(Us) -> io_lib:format("~b µs", [round(Us)]).

fmt_int(N) when is_float(N) -> fmt_int(round(N));
fmt_int(N) when is_integer(N) ->
    S = integer_to_list(abs(N)),
    Groups = lists:reverse(group3(lists:reverse(S))),
    [[$- || N < 0] | lists:join($,, Groups)].

group3([A, B, C | T]) -> [[C, B, A] | group3(T)];
group3([]) -> [];
group3(L) -> [lists:reverse(L)].

size_label(B) when B >= 1048576, B rem 1048576 =:= 0 -> io_lib:format("~b MiB", [B div 1048576]);
size_label(B) when B >= 1024, B rem 1024 =:= 0 -> io_lib:format("~b KiB", [B div 1024]);
size_label(B) -> io_lib:format("~b B", [B]).

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

%% @doc The environment section every report starts with: build, OTP, machine, the peers'
%% emulator flags and `args'. `Variants' is a list of `{Label, NodeInfo, Args}' (one per set of
%% peer flags used).
environment(Title, Started, Variants) ->
    Iso = fun(T) -> calendar:system_time_to_rfc3339(T, [{offset, "Z"}]) end,
    {_, NA, _} = hd(Variants),
    [io_lib:format("# ~ts~n~n", [Title]),
     io_lib:format("Run: ~ts to ~ts on ~ts (~ts)~n~n",
                   [Iso(Started), Iso(erlang:system_time(second)), string:trim(os:cmd("hostname")),
                    string:trim(os:cmd("uname -srm"))]),
     "## Environment\n\n",
     io_lib:format("- build: ~ts~n", [os:getenv("BENCH_BUILD_INFO", "unknown")]),
     io_lib:format("- OTP ~ts (erts ~ts), emu_flavor `~p`, emu_type `~p`~n",
                   [maps:get(otp, NA), maps:get(erts, NA), maps:get(emu_flavor, NA),
                    maps:get(emu_type, NA)]),
     io_lib:format("- nproc: ~ts; CPU: ~ts; logical processors available to the VM: ~p~n",
                   [string:trim(os:cmd("nproc")), cpu_model(),
                    maps:get(logical_processors_available, NA)]),
     [io_lib:format("- peers~ts: emulator flags `~ts`; schedulers ~b/~b online (bind type ~p), "
                    "dirty CPU ~b, dirty IO ~b; `peer:start_link/1` args `~ts`~n",
                    [case Label of "" -> ""; _ -> [" (", Label, ")"] end,
                     case maps:get(emu_args, N) of "" -> "(none: defaults)"; E -> E end,
                     maps:get(schedulers, N), maps:get(schedulers_online, N),
                     maps:get(scheduler_bind_type, N), maps:get(dirty_cpu_schedulers, N),
                     maps:get(dirty_io_schedulers, N), lists:join(" ", redact(Args))])
      || {Label, N, Args} <- Variants],
     case os:getenv("BENCH_PARTISAN_ENV", "") of
         "" -> [];
         Extra -> io_lib:format("- partisan config added on every peer (`BENCH_PARTISAN_ENV`): `~ts`~n", [Extra])
     end,
     io_lib:format("- controller: `erl -name ~s` (schedulers ~b), idle during the measured windows; "
                   "the peers and the controller share the machine~n~n",
                   [node(), erlang:system_info(schedulers)])].

%% @doc One line on the CPU used by others during the measured windows (a list of % values).
noise_note([]) -> "";
noise_note(Fs) ->
    Note = io_lib:format("CPU used by processes other than the peers under test during the "
                         "measured windows (controller, proxies and any other workload): "
                         "median ~b %, max ~b % of one core (the machine has ~ts00 %).",
                         [round(median(Fs)), round(lists:max(Fs)), string:trim(os:cmd("nproc"))]),
    case lists:max(Fs) > 20 of
        true -> ["**Noisy machine:** ", Note, " Spreads are wide; rerun on an idle machine for "
                 "firm numbers.\n\n"];
        false -> [Note, "\n\n"]
    end.

foreign_summary(Fs) -> {round(median(Fs)), round(lists:max(Fs))}.

%% @doc Writes `Report' to `$BENCH_RESULTS_DIR/Name-<date>-<time>.md'; returns the file name
%% (without `.md': plots go beside it).
write_report(Name, Report) ->
    Dir = env_str("BENCH_RESULTS_DIR", filename:join("bench", "results")),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    {{Y, Mo, D}, {H, Mi, S}} = calendar:universal_time(),
    Base = lists:flatten(io_lib:format("~s-~4..0b-~2..0b-~2..0b-~2..0b~2..0b~2..0b",
                                       [Name, Y, Mo, D, H, Mi, S])),
    File = filename:join(Dir, Base ++ ".md"),
    ok = file:write_file(File, unicode:characters_to_binary(Report)),
    io:format("report written to ~ts~n", [File]),
    filename:join(Dir, Base).

%% @doc Completes the report `write_report/2' started at `Base' with its plot (or any final
%% lines), rewrites `Base.md' and prints the whole report.
finish_report(Base, Report0, Tail) ->
    Report = [Report0, Tail],
    ok = file:write_file(Base ++ ".md", unicode:characters_to_binary(Report)),
    io:format("~n~ts~n", [Report]).

%% @doc Writes `Base.dat' (`Data' is iodata, gnuplot's format) and renders `Base.png' with the
%% gnuplot `Script' (which may use the placeholders `@DAT@' and `@PNG@'). Returns the markdown
%% line that shows the plot, or a note when gnuplot is missing.
plot(Base, Data, Script) ->
    Dat = Base ++ ".dat",
    Png = Base ++ ".png",
    ok = file:write_file(Dat, unicode:characters_to_binary(Data)),
    case os:find_executable("gnuplot") of
        false ->
            io:format("gnuplot not found: skipping the plot (data in ~ts)~n", [Dat]),
            io_lib:format("(plot skipped: gnuplot is not installed; data in `~ts`)~n~n",
                          [filename:basename(Dat)]);
        Gp ->
            S0 = unicode:characters_to_list(Script),
            S1 = string:replace(string:replace(S0, "@DAT@", Dat, all), "@PNG@", Png, all),
            Gpf = Base ++ ".gp",
            ok = file:write_file(Gpf, unicode:characters_to_binary(
                                        ["set terminal pngcairo size 900,540 noenhanced font ',10'\n"
                                         "set output '", Png, "'\n", S1, "\n"])),
            Out = os:cmd(Gp ++ " " ++ Gpf ++ " 2>&1"),
            file:delete(Gpf),
            case filelib:is_regular(Png) of
                true ->
                    io:format("plot written to ~ts~n", [Png]),
                    io_lib:format("![plot](~ts)~n~n", [filename:basename(Png)]);
                false ->
                    io:format("gnuplot failed: ~ts~n", [Out]),
                    io_lib:format("(plot failed: ~ts)~n~n", [string:trim(Out)])
            end
    end.

%% -- link emulator ------------------------------------------------------------------------------

%% @doc Starts `partisan_linkemu' forwarding a fresh loopback port to `Target' (a port on
%% 127.0.0.1) with `Opts' (`#{delay_ms, rate_mbit, window}'). Returns `{Port, Handle}'; the
%% proxy exits when the handle (an Erlang port: its stdin) closes, and is killed by pid too.
linkemu_start(Watchdog, Target, Opts) ->
    Exe = env_str("BENCH_LINKEMU", "target/release/partisan_linkemu"),
    Args = ["--listen", "127.0.0.1:0", "--target", "127.0.0.1:" ++ integer_to_list(Target),
            "--delay-ms", float_to_list(float(maps:get(delay_ms, Opts, 0)), [{decimals, 3}]),
            "--exit-on-stdin-eof"]
        ++ case maps:get(rate_mbit, Opts, 0) of 0 -> []; R -> ["--rate-mbit", integer_to_list(R)] end
        ++ case maps:get(window, Opts, undefined) of
               undefined -> [];
               W -> ["--window", integer_to_list(W)]
           end,
    P = open_port({spawn_executable, filename:absname(Exe)},
                  [{args, Args}, {line, 256}, binary, use_stdio, exit_status]),
    {os_pid, OsPid} = erlang:port_info(P, os_pid),
    Watchdog ! {proxy, OsPid},
    receive
        {P, {data, {eol, <<"listening ", Addr/binary>>}}} ->
            [_, PortBin] = binary:split(Addr, <<":">>, [trim]),
            {binary_to_integer(PortBin), {P, OsPid, Watchdog}};
        {P, {exit_status, S}} ->
            error({linkemu_failed, S})
    after 5000 ->
        kill_os_pid(OsPid),
        error(linkemu_timeout)
    end.

%% @doc `#{accepted, bytes, failed_connects}' of a running proxy.
linkemu_stats({P, _, _}) ->
    port_command(P, <<"stats\n">>),
    receive
        {P, {data, {eol, <<"stats ", Rest/binary>>}}} ->
            maps:from_list([begin
                                [K, V] = binary:split(KV, <<"=">>),
                                {binary_to_atom(K), binary_to_integer(V)}
                            end || KV <- binary:split(Rest, <<" ">>, [global, trim_all])])
    after 2000 -> #{}
    end.

linkemu_stop({P, OsPid, Watchdog}) ->
    catch port_close(P),
    kill_os_pid(OsPid),
    Watchdog ! {proxy_done, OsPid},
    ok.

%% @doc A TCP port that was free a moment ago.
free_port() ->
    {ok, S} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(S),
    gen_tcp:close(S),
    Port.
