%% @doc `[partisan, ...]' events through the `telemetry' library, when the host application has
%% it.
%%
%% `telemetry' is a soft dependency: `partisan' neither needs it to build nor to run. Whether the
%% module can be loaded is checked once when `partisan' starts (`init/0') and cached in
%% `persistent_term'; without it `execute/3' returns `ok' at once. The application resource
%% lists `telemetry' as an optional application, so when it is present (a dependency of the
%% host project) OTP starts it before `partisan'. Where that order is not kept (Mix before
%% Elixir 1.15 leaves optional applications out of the resource file), events are skipped until
%% the `telemetry' application runs (its handler table process is registered), then that too is
%% cached.
%%
%% The events (`events/0'); measurements and metadata are maps:
%%
%% | event | measurements | metadata |
%% |---|---|---|
%% | `[partisan, connection, up]' | `count' (1) | `node', `channel', `connection' (index in the channel) |
%% | `[partisan, connection, down]' | `count' (1) | `node', `channel', `connection', `reason' |
%% | `[partisan, node, up]', `[partisan, node, down]' | `count' (1) | `node' |
%% | `[partisan, message, dropped]' | `count' | `reason', `node', `channel' |
%% | `[partisan, queue, full]' | `count' | `node', `channel' |
%% | `[partisan, auth, failure]' | `count' | `direction', `peer', `reason' |
%% | `[partisan, membership, change]' | `members' (how many) | `node', `members', `joined', `left' |
%% | `[partisan, broadcast, delivered]' | `count' (1), `size' (bytes) | `from', `handler', `new' |
%% | `[partisan, peer_discovery, lookup]' | `duration' (native units), `peers' | `backend', `result' |
%% | `[partisan, peer_discovery, unreachable]' | `attempt', `retry_in' (ms) | `node', `reason' |
%% | `[partisan, peer_discovery, join]' | `attempt' | `node' |
%%
%% The README describes each field. Drops and failed handshakes happen in the data plane; they
%% are reported in aggregate, at most one event per (reason, node, channel) and second, with
%% the exact count; `partisan:stats()' keeps the totals whether or not `telemetry' is there.
-module(partisan_telemetry).

-export([init/0, available/0, execute/3, events/0]).

-define(KEY, {?MODULE, module}).

%% @doc Looks for the `telemetry' module (loading it if it is in the code path) and caches the
%% answer for `execute/3'. Called when `partisan' starts.
-spec init() -> ok.
init() ->
    Module = case code:ensure_loaded(telemetry) of
                 {module, telemetry} -> running(telemetry);
                 {error, _} -> undefined
             end,
    %% Only on a change: putting a persistent term again costs a global GC.
    persistent_term:get(?KEY, unchecked) =:= Module orelse persistent_term:put(?KEY, Module),
    ok.

%% @doc Whether events go to `telemetry' (its module was found when `partisan' started, and its
%% application runs).
-spec available() -> boolean().
available() ->
    module() =:= telemetry.

%% @doc Emits `Event' with `telemetry:execute/3' when `telemetry' is available; `ok' otherwise.
%% Never raises (`telemetry' itself detaches a handler that fails).
-spec execute([atom(), ...], #{atom() => number()}, #{atom() => term()}) -> ok.
execute(Event, Measurements, Metadata) ->
    case module() of
        telemetry ->
            Module = persistent_term:get(?KEY),
            try Module:execute(Event, Measurements, Metadata) of
                _ -> ok
            catch
                _:_ -> ok
            end;
        _ ->
            ok
    end.

%% @doc The name of every event `partisan' emits, e.g. for `telemetry:attach_many/4'.
-spec events() -> [[atom(), ...]].
events() ->
    [[partisan, connection, up], [partisan, connection, down],
     [partisan, node, up], [partisan, node, down],
     [partisan, message, dropped], [partisan, queue, full], [partisan, auth, failure],
     [partisan, membership, change], [partisan, broadcast, delivered],
     [partisan, peer_discovery, lookup], [partisan, peer_discovery, unreachable],
     [partisan, peer_discovery, join]].

module() ->
    case persistent_term:get(?KEY, unchecked) of
        telemetry -> telemetry;
        undefined -> undefined;
        unchecked -> init(), module();
        not_started ->
            case running(telemetry) of
                telemetry -> persistent_term:put(?KEY, telemetry), telemetry;
                not_started -> not_started
            end
    end.

%% `telemetry:execute/3' before the application started would log a warning per event.
running(telemetry) ->
    case whereis(telemetry_handler_table) of
        undefined -> not_started;
        _ -> telemetry
    end.
