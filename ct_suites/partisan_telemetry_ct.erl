%% Test helpers around the `telemetry' library: build it from source for the test VMs, and
%% collect the `[partisan, ...]' events a node emits.
%%
%% partisan does not ship `telemetry' (it is an optional dependency of the host project): the
%% suites compile its source, by default the checkout at `/work/shared/vendor/telemetry' (or
%% `$PARTISAN_TELEMETRY_SRC'), into the suite's private directory and put it in the peers' code
%% path; `application:ensure_all_started(partisan)' then starts it first, as an optional
%% application.
-module(partisan_telemetry_ct).

-export([build/1, attach/0, events/0, events/1, handle/4]).

-define(DEFAULT_SRC, "/work/shared/vendor/telemetry").
-define(COLLECTOR, partisan_telemetry_ct_collector).

%% Compiles telemetry's `src/' into `Dir/telemetry/ebin' (with its `.app'): `{ok, Ebin}', or
%% `{skip, Why}' when the source is not there.
-spec build(file:filename()) -> {ok, file:filename()} | {skip, string()}.
build(Dir) ->
    Src = os:getenv("PARTISAN_TELEMETRY_SRC", ?DEFAULT_SRC),
    Ebin = filename:join([Dir, "telemetry", "ebin"]),
    case filelib:is_file(filename:join([Src, "src", "telemetry.erl"])) of
        false ->
            {skip, lists:flatten(io_lib:format("the telemetry source is not at ~ts: set "
                                               "PARTISAN_TELEMETRY_SRC to a checkout of "
                                               "beam-telemetry/telemetry", [Src]))};
        true ->
            ok = filelib:ensure_dir(filename:join(Ebin, "x")),
            Mods = [begin
                        {ok, M} = compile:file(F, [{outdir, Ebin}, {i, filename:join(Src, "src")},
                                                   debug_info, return_errors]),
                        M
                    end || F <- filelib:wildcard(filename:join([Src, "src", "*.erl"]))],
            {ok, [{application, telemetry, Props}]} =
                file:consult(filename:join([Src, "src", "telemetry.app.src"])),
            App = {application, telemetry, lists:keystore(modules, 1, Props, {modules, Mods})},
            ok = file:write_file(filename:join(Ebin, "telemetry.app"),
                                 io_lib:format("~p.~n", [App])),
            {ok, Ebin}
    end.

%% On the node it runs on: starts a collector that lives as long as the VM and attaches it to
%% every event partisan emits.
-spec attach() -> ok.
attach() ->
    Collector = case whereis(?COLLECTOR) of
        undefined ->
            Pid = spawn(fun() -> collect([]) end),
            true = register(?COLLECTOR, Pid),
            Pid;
        Pid ->
            Pid
    end,
    _ = telemetry:detach(?COLLECTOR),
    ok = telemetry:attach_many(?COLLECTOR, partisan_telemetry:events(), fun ?MODULE:handle/4,
                               Collector).

%% The telemetry handler: forwards each event to the collector.
-spec handle([atom()], map(), map(), pid()) -> ok.
handle(Event, Measurements, Metadata, Collector) ->
    Collector ! {event, Event, Measurements, Metadata, erlang:monotonic_time(millisecond)},
    ok.

%% Every event collected on this node, oldest first: `{Event, Measurements, Metadata, TimeMs}'.
-spec events() -> [{[atom()], map(), map(), integer()}].
events() ->
    Ref = make_ref(),
    ?COLLECTOR ! {get, self(), Ref},
    receive {Ref, Events} -> Events after 5000 -> error(collector_timeout) end.

%% The events named `Name', oldest first.
-spec events([atom()]) -> [{[atom()], map(), map(), integer()}].
events(Name) ->
    [E || E = {N, _, _, _} <- events(), N =:= Name].

collect(Acc) ->
    receive
        {event, E, M, Meta, T} -> collect([{E, M, Meta, T} | Acc]);
        {get, From, Ref} -> From ! {Ref, lists:reverse(Acc)}, collect(Acc)
    end.
