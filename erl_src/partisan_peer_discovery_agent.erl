%% @doc Peer discovery (Partisan v5's `partisan_peer_discovery_agent'): nodes started with the
%% same discovery configuration find each other and form one cluster, with no explicit join.
%%
%% A state machine (`enabled' or `disabled') that asks a backend module for the node specs of the
%% cluster's nodes (`lookup/2') every `polling_interval', and joins the ones that are not members
%% yet. Backends: `partisan_peer_discovery_list' (a static list), `partisan_peer_discovery_dns'
%% (A, SRV or A + PTR records), or your own module implementing this behaviour's callbacks:
%%
%% ```
%% -callback init(Config :: map()) -> {ok, State} | {error, Reason}.
%% -callback lookup(State, Timeout :: timeout()) -> {ok, [partisan:node_spec()], State}
%%                                                | {error, Reason, State}.
%% '''
%%
%% Configuration, the `peer_discovery' key (a map or a proplist):
%%
%% ```
%% {peer_discovery, #{enabled => true,
%%                    type => partisan_peer_discovery_dns,          % the backend module
%%                    config => #{record_type => a, name => "partisan.example.com",
%%                                nodename => "app"},               % the backend's init/1 argument
%%                    initial_delay => 10000,        % ms before the first lookup (v5: 10 s)
%%                    polling_interval => 60000,     % ms between lookups (v5: 60 s)
%%                    timeout => 5000,               % ms for a lookup and for a probe
%%                    retry_interval => 1000,        % ms before probing an unreachable node again
%%                    max_retry_interval => 30000}}  % ... doubling up to this
%% '''
%%
%% A discovered node is joined only once it answers: its listen address accepts a TCP
%% connection (a probe, at most `timeout' ms). One that does not is probed again after
%% `retry_interval', then after twice as long at each failure, up to `max_retry_interval'
%% (`retry_interval' and `max_retry_interval' are this release's; v5 has no backoff), and joined
%% as soon as it answers. So a node listed in advance, or a stale DNS record, never shows up in
%% `partisan_peer_service:members/0' before it runs. Once joined, a node is the overlay's: its
%% links are redialed as for any member. Discovery only adds members: a node that disappears from
%% the backend's answer is not removed (a partial DNS answer must not evict live members; a dead
%% member is seen by the data plane, and `partisan_peer_service:leave/1' removes it for good).
%%
%% Telemetry (see `partisan_telemetry'): `[partisan, peer_discovery, lookup]',
%% `[partisan, peer_discovery, unreachable]' (with the attempt number and the wait before the
%% next one) and `[partisan, peer_discovery, join]'.
-module(partisan_peer_discovery_agent).
-behaviour(gen_statem).

-export([start/0, start_link/0, lookup/0, enable/0, disable/0, status/0]).
-export([normalise_config/1]).
-export([init/1, callback_mode/0, terminate/3, code_change/4, enabled/3, disabled/3]).

-include_lib("kernel/include/logger.hrl").

-callback init(Config :: map()) -> {ok, State :: term()} | {error, Reason :: term()}.
-callback lookup(State :: term(), Timeout :: timeout()) ->
    {ok, [partisan:node_spec()], NewState :: term()} | {error, Reason :: term(), NewState :: term()}.

-define(CALL_TIMEOUT, 15000).
-define(DEFAULTS, #{enabled => false, config => #{}, initial_delay => 10000,
                    polling_interval => 60000, timeout => 5000, retry_interval => 1000,
                    max_retry_interval => 30000}).
-define(KEYS, [type | maps:keys(?DEFAULTS)]).

-type entry() :: #{spec := partisan:node_spec(), attempt := non_neg_integer(),
                   at := integer(), probe := reference() | undefined}.
-record(data, {opts :: map(),
               mod :: module() | undefined,
               cb :: term(),
               %% Discovered nodes that are not members yet, until they answer a probe.
               pending = #{} :: #{node() => entry()},
               %% Probes in flight: the prober's monitor and the node it probes.
               probes = #{} :: #{pid() => {reference(), node()}}}).

%% @doc Starts the agent, not linked (Partisan v5's API; the `partisan' application starts it
%% under its supervisor).
-spec start() -> {ok, pid()} | ignore | {error, term()}.
start() ->
    gen_statem:start({local, ?MODULE}, ?MODULE, [], []).

%% @doc Starts the agent, linked to the caller, registered as `partisan_peer_discovery_agent'.
%% It reads the `peer_discovery' key; a bad one (or a backend whose `init/1' fails) stops it with
%% `{invalid_config, peer_discovery, Why}'.
-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    gen_statem:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Asks the backend now. `{ok, Specs}' with this node's spec first, as in Partisan v5;
%% `{error, disabled}' when discovery is disabled, `{error, Reason}' when the backend failed.
%% Nothing is joined (the agent joins on its own schedule).
-spec lookup() -> {ok, [partisan:node_spec()]} | {error, term()}.
lookup() ->
    gen_statem:call(?MODULE, lookup, ?CALL_TIMEOUT).

%% @doc Enables discovery (and looks up at once). `{error, missing_configuration}' when
%% `peer_discovery' names no `type'; `{error, Reason}' when the backend's `init/1' fails.
-spec enable() -> ok | {error, term()}.
enable() ->
    gen_statem:call(?MODULE, enable, ?CALL_TIMEOUT).

%% @doc Disables discovery: no lookup or probe until `enable/0'. Members stay members.
-spec disable() -> ok.
disable() ->
    gen_statem:call(?MODULE, disable, ?CALL_TIMEOUT).

%% @doc `enabled' or `disabled'.
-spec status() -> enabled | disabled.
status() ->
    gen_statem:call(?MODULE, status, ?CALL_TIMEOUT).

%% @doc Validates a `peer_discovery' value (a map or a proplist) and fills in the defaults.
%% `{error, Why}' says what to fix. `partisan_config' calls it when `partisan' starts.
-spec normalise_config(term()) -> {ok, map()} | {error, string()}.
normalise_config(List) when is_list(List) ->
    case lists:all(fun(E) -> is_tuple(E) andalso tuple_size(E) =:= 2 end, List) of
        true -> normalise_config(maps:from_list(List));
        false -> error_text("~p must be a map or a proplist of {Key, Value}", [List])
    end;
normalise_config(Map) when is_map(Map) ->
    Opts = maps:merge(?DEFAULTS, Map),
    Checks = [{fun() -> maps:keys(Map) -- ?KEYS =:= [] end,
               "unknown keys ~p; known: ~p", [maps:keys(Map) -- ?KEYS, ?KEYS]},
              {fun() -> is_boolean(maps:get(enabled, Opts)) end,
               "enabled ~p must be a boolean", [maps:get(enabled, Opts)]},
              {fun() -> maps:get(enabled, Opts) =:= false orelse is_map_key(type, Opts) end,
               "enabled => true needs type => Module (partisan_peer_discovery_list, "
               "partisan_peer_discovery_dns or your own backend)", []},
              {fun() -> not is_map_key(type, Opts) orelse is_backend(maps:get(type, Opts)) end,
               "type ~p is not a loadable module exporting init/1 and lookup/2",
               [maps:get(type, Opts, undefined)]},
              {fun() -> is_map(maps:get(config, Opts)) end,
               "config ~p must be a map (the backend's options)", [maps:get(config, Opts)]}]
        ++ [{fun() -> is_integer(V) andalso V >= Min end,
             "~p ~p must be an integer of at least ~p (milliseconds)", [K, V, Min]}
            || {K, Min} <- [{initial_delay, 0}, {polling_interval, 100}, {timeout, 1},
                            {retry_interval, 1}, {max_retry_interval, 1}],
               V <- [maps:get(K, Opts)]]
        ++ [{fun() -> maps:get(max_retry_interval, Opts) >= maps:get(retry_interval, Opts) end,
             "max_retry_interval ~p must not be less than retry_interval ~p",
             [maps:get(max_retry_interval, Opts), maps:get(retry_interval, Opts)]}],
    case [{Fmt, Args} || {Check, Fmt, Args} <- Checks, not Check()] of
        [] -> {ok, Opts};
        [{Fmt, Args} | _] -> error_text(Fmt, Args)
    end;
normalise_config(Other) ->
    error_text("~p must be a map or a proplist", [Other]).

error_text(Fmt, Args) ->
    {error, lists:flatten(io_lib:format(Fmt, Args))}.

is_backend(Mod) ->
    is_atom(Mod) andalso code:ensure_loaded(Mod) =:= {module, Mod}
        andalso erlang:function_exported(Mod, init, 1)
        andalso erlang:function_exported(Mod, lookup, 2).

%% @private
-spec init([]) -> gen_statem:init_result(enabled | disabled).
init([]) ->
    case normalise_config(partisan_config:get(peer_discovery, #{})) of
        {ok, Opts = #{enabled := true}} ->
            case start_backend(#data{opts = Opts}) of
                {ok, Data} ->
                    {ok, enabled, Data, [first_lookup(maps:get(initial_delay, Opts))]};
                {error, Reason} ->
                    {stop, {invalid_config, peer_discovery, Reason}}
            end;
        {ok, Opts} ->
            is_map_key(type, Opts) andalso
                ?LOG_NOTICE("partisan: peer_discovery names a type but enabled is not true: "
                            "discovery is disabled until partisan_peer_discovery_agent:enable/0"),
            {ok, disabled, #data{opts = Opts}};
        {error, Why} ->
            {stop, {invalid_config, peer_discovery, Why}}
    end.

first_lookup(0) -> {next_event, internal, lookup};
first_lookup(Delay) -> {{timeout, lookup}, Delay, lookup}.

start_backend(Data = #data{opts = #{type := Mod, config := Config}}) ->
    try Mod:init(Config) of
        {ok, CB} -> {ok, Data#data{mod = Mod, cb = CB}};
        {error, Reason} -> {error, Reason};
        Other -> {error, {bad_return, Mod, init, Other}}
    catch
        Class:Reason -> {error, {Class, Reason}}
    end;
start_backend(#data{}) ->
    {error, missing_configuration}.

%% @private
-spec callback_mode() -> state_functions.
callback_mode() ->
    state_functions.

%% @private
-spec terminate(term(), atom(), #data{}) -> ok.
terminate(_Reason, _State, _Data) ->
    ok.

%% @private
-spec code_change(term(), atom(), #data{}, term()) -> {ok, atom(), #data{}}.
code_change(_OldVsn, State, Data, _Extra) ->
    {ok, State, Data}.

%% @private
%% Looks up every `polling_interval', probes the nodes found that are not members, joins those
%% that answer and probes the others again with backoff.
-spec enabled(gen_statem:event_type(), term(), #data{}) -> gen_statem:event_handler_result(atom()).
enabled({call, From}, enable, _Data) ->
    {keep_state_and_data, [{reply, From, ok}]};
enabled({call, From}, disable, Data) ->
    [erlang:demonitor(Ref, [flush]) || {Ref, _} <- maps:values(Data#data.probes)],
    {next_state, disabled, Data#data{pending = #{}, probes = #{}},
     [{reply, From, ok}, {{timeout, lookup}, cancel}, {{timeout, retry}, cancel}]};
enabled({call, From}, lookup, Data) ->
    case backend_lookup(Data) of
        {ok, Specs, Data1} -> {keep_state, Data1, [{reply, From, {ok, [partisan:node_spec() | Specs]}}]};
        {error, Reason, Data1} -> {keep_state, Data1, [{reply, From, {error, Reason}}]}
    end;
enabled(EventType, lookup, Data) when EventType =:= internal; EventType =:= {timeout, lookup} ->
    Data1 = case backend_lookup(Data) of
        {ok, Specs, D} ->
            track(Specs, D);
        {error, Reason, D} ->
            ?LOG_WARNING("partisan peer discovery: ~p lookup failed: ~p", [D#data.mod, Reason]),
            D
    end,
    Interval = maps:get(polling_interval, Data1#data.opts),
    {keep_state, Data1, [{{timeout, lookup}, Interval, lookup} | retry(Data1)]};
enabled({timeout, retry}, retry, Data) ->
    Data1 = probe_due(Data),
    {keep_state, Data1, retry(Data1)};
enabled(info, {probe, Pid, Result}, Data = #data{probes = Probes}) when is_map_key(Pid, Probes) ->
    {{Ref, Node}, Probes1} = maps:take(Pid, Probes),
    erlang:demonitor(Ref, [flush]),
    Data1 = probed(Node, Result, Data#data{probes = Probes1}),
    {keep_state, Data1, retry(Data1)};
enabled(info, {'DOWN', _, process, Pid, Reason}, Data = #data{probes = Probes}) when is_map_key(Pid, Probes) ->
    %% The prober died before it answered.
    {{_, Node}, Probes1} = maps:take(Pid, Probes),
    Data1 = probed(Node, {error, {probe_crashed, Reason}}, Data#data{probes = Probes1}),
    {keep_state, Data1, retry(Data1)};
enabled(EventType, Event, Data) ->
    common(EventType, Event, enabled, Data).

%% @private
-spec disabled(gen_statem:event_type(), term(), #data{}) -> gen_statem:event_handler_result(atom()).
disabled({call, From}, disable, _Data) ->
    {keep_state_and_data, [{reply, From, ok}]};
disabled({call, From}, enable, Data = #data{mod = undefined}) ->
    case start_backend(Data) of
        {ok, Data1} -> {next_state, enabled, Data1, [{reply, From, ok}, {next_event, internal, lookup}]};
        {error, Reason} -> {keep_state_and_data, [{reply, From, {error, Reason}}]}
    end;
disabled({call, From}, enable, Data) ->
    {next_state, enabled, Data, [{reply, From, ok}, {next_event, internal, lookup}]};
disabled({call, From}, lookup, _Data) ->
    {keep_state_and_data, [{reply, From, {error, disabled}}]};
disabled(info, {probe, _, _}, _Data) ->
    keep_state_and_data;
disabled(EventType, Event, Data) ->
    common(EventType, Event, disabled, Data).

common({call, From}, status, State, _Data) ->
    {keep_state_and_data, [{reply, From, State}]};
common({call, From}, _, _State, _Data) ->
    {keep_state_and_data, [{reply, From, {error, unknown_call}}]};
common(_, _, _, _) ->
    keep_state_and_data.

%% The backend's answer, its failures caught: a broken backend must not take partisan down.
backend_lookup(Data = #data{mod = Mod, cb = CB, opts = #{timeout := Timeout}}) ->
    T0 = erlang:monotonic_time(),
    {Result, Data1} =
        try Mod:lookup(CB, Timeout) of
            {ok, Specs, CB1} when is_list(Specs) -> {{ok, Specs}, Data#data{cb = CB1}};
            {error, Reason, CB1} -> {{error, Reason}, Data#data{cb = CB1}};
            Other -> {{error, {bad_return, Mod, lookup, Other}}, Data}
        catch
            Class:Reason:Stack -> {{error, {Class, Reason, Stack}}, Data}
        end,
    Peers = case Result of {ok, L} -> length(L); _ -> 0 end,
    partisan_telemetry:execute([partisan, peer_discovery, lookup],
                               #{duration => erlang:monotonic_time() - T0, peers => Peers},
                               #{backend => Mod, result => case Result of
                                                             {ok, _} -> ok;
                                                             Error -> Error
                                                         end}),
    case Result of
        {ok, Specs1} -> {ok, Specs1, Data1};
        {error, R} -> {error, R, Data1}
    end.

%% Adds the discovered nodes that are not members to the pending ones (due now), refreshes the
%% specs of those already pending, and forgets those that became members meanwhile.
track(Specs, Data = #data{pending = Pending0}) ->
    Me = partisan:node(),
    Now = now_ms(),
    Pending = lists:foldl(
                fun(Spec, P) ->
                        case partisan_node_spec:validate(Spec) of
                            {ok, #{name := Me}} ->
                                P;
                            {ok, #{name := Node} = Valid} ->
                                case {is_member(Node), P} of
                                    {true, _} -> maps:remove(Node, P);
                                    {false, #{Node := E}} -> P#{Node => E#{spec => Valid}};
                                    {false, _} -> P#{Node => #{spec => Valid, attempt => 0, at => Now,
                                                               probe => undefined}}
                                end;
                            {error, Why} ->
                                ?LOG_WARNING("partisan peer discovery: ~p returned a bad node spec "
                                             "~p: ~p", [Data#data.mod, Spec, Why]),
                                P
                        end
                end, Pending0, Specs),
    probe_due(Data#data{pending = Pending}).

is_member(Node) ->
    try partisan_peer_service:member(Node) catch _:_ -> false end.

%% Starts a probe of every pending node that is due and has none in flight.
probe_due(Data = #data{pending = Pending, probes = Probes, opts = #{timeout := Timeout}}) ->
    Now = now_ms(),
    Due = [N || {N, #{at := At, probe := undefined}} <- maps:to_list(Pending), At =< Now],
    lists:foldl(
      fun(Node, D = #data{pending = P, probes = Pr}) ->
              #{Node := E = #{spec := #{listen_addrs := Addrs}}} = P,
              Agent = self(),
              {Pid, Ref} = spawn_monitor(fun() -> Agent ! {probe, self(), probe(Addrs, Timeout)} end),
              D#data{pending = P#{Node => E#{probe => Ref}}, probes = Pr#{Pid => {Ref, Node}}}
      end, Data#data{probes = Probes}, Due).

%% The node answers when one of its listen addresses accepts a TCP connection.
probe([#{ip := IP, port := Port} | Rest], Timeout) ->
    case gen_tcp:connect(IP, Port, [binary, {active, false}], Timeout) of
        {ok, Socket} ->
            ok = gen_tcp:close(Socket);
        {error, Reason} when Rest =:= [] ->
            {error, Reason};
        {error, _} ->
            probe(Rest, Timeout)
    end.

probed(Node, Result, Data = #data{pending = Pending}) ->
    case Pending of
        #{Node := E = #{spec := Spec, attempt := Attempt}} ->
            Outcome = case Result of
                ok ->
                    case is_member(Node) of
                        true -> ok;
                        false -> partisan_peer_service:join(Spec)
                    end;
                {error, _} = Error -> Error
            end,
            case Outcome of
                ok ->
                    ?LOG_INFO("partisan peer discovery: joined ~p", [Node]),
                    partisan_telemetry:execute([partisan, peer_discovery, join],
                                               #{attempt => Attempt + 1}, #{node => Node}),
                    Data#data{pending = maps:remove(Node, Pending)};
                {error, Reason} ->
                    unreachable(Node, E, Reason, Data)
            end;
        _ ->
            Data
    end.

unreachable(Node, E = #{attempt := Attempt0, spec := Spec}, Reason, Data = #data{pending = Pending, opts = Opts}) ->
    #{retry_interval := Min, max_retry_interval := Max} = Opts,
    Attempt = Attempt0 + 1,
    RetryIn = min(Max, Min bsl min(Attempt - 1, 32)),
    Attempt =:= 1 andalso
        ?LOG_INFO("partisan peer discovery: ~p (~p) does not answer (~p); retrying with backoff",
                  [Node, maps:get(listen_addrs, Spec), Reason]),
    partisan_telemetry:execute([partisan, peer_discovery, unreachable],
                               #{attempt => Attempt, retry_in => RetryIn},
                               #{node => Node, reason => Reason}),
    Data#data{pending = Pending#{Node => E#{attempt => Attempt, at => now_ms() + RetryIn,
                                            probe => undefined}}}.

%% The retry timer: at the earliest time a pending node without a probe in flight is due.
retry(#data{pending = Pending}) ->
    case [At || #{at := At, probe := undefined} <- maps:values(Pending)] of
        [] -> [{{timeout, retry}, cancel}];
        Ats -> [{{timeout, retry}, max(0, lists:min(Ats) - now_ms()), retry}]
    end.

now_ms() ->
    erlang:monotonic_time(millisecond).
