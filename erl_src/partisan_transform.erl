%% @doc A parse transform that makes a module written for Distributed Erlang send, monitor and
%% call over Partisan, unchanged: `-compile({parse_transform, partisan_transform}).'
%%
%% It rewrites every occurrence in the module's expressions (nested expressions, funs,
%% comprehensions, `case'/`receive'/`try'/`if'/`maybe' bodies, record field defaults), not only
%% top-level statements as Partisan v5's transform does:
%% <ul>
%% <li>`Dest ! Msg' and `erlang:send(Dest, Msg)' become {@link send/2}, which sends over
%%     Partisan and, like `!', evaluates to `Msg'; `erlang:send(Dest, Msg, Opts)' becomes
%%     {@link send/3}.</li>
%% <li>`self()', `node()', `node(X)', `nodes()', `make_ref()', `is_pid/1', `is_reference/1',
%%     `is_process_alive/1', `monitor/2,3', `demonitor/1,2', `monitor_node/2,3', `exit/2',
%%     `spawn/2,4', `spawn_monitor/2,4', `send_after/3,4', `cancel_timer/1,2',
%%     `process_info/1,2', `whereis/1' (called as BIFs or `erlang:F(...)', or as `fun F/A')
%%     become the `partisan' function of the same name and arity.</li>
%% <li>Calls to `gen_server', `gen_statem', `gen_event', `supervisor', `proc_lib', `sys',
%%     `erpc' and `rpc:call/4,5' go to `partisan_gen_server', `partisan_gen_statem',
%%     `partisan_gen_event', `partisan_gen_supervisor', `partisan_proc_lib', `partisan_sys',
%%     `partisan_erpc' and `partisan_rpc' (the functions both export; imports included).</li>
%% </ul>
%% Guards are never changed (they cannot call remote functions), nor are comprehension filters
%% that are guard tests, nor the field defaults of a record created in a guard. `self()' stays a plain pid where only a local pid is accepted: as the
%% destination of a send or timer, and as a direct argument of a BIF that is not redirected
%% (`register/2', `link/1', `erlang:start_timer/3', ...) or of a few library functions
%% (`ets:give_away/3', `gen_tcp:controlling_process/2', `timer:send_after/3', `pg:join/2,3').
%% See `partisan_transform_rules' for the table.
%%
%% Opting out: `-partisan_transform([{skip, Rewrites}]).' in the module, or the compile option
%% `{partisan_transform, [{skip, Rewrites}]}' (both add up). A rewrite is named by `` '!' '',
%% a BIF's name (`self', `node', `send', `monitor', ...), `{Name, Arity}' (`{node, 1}'), an OTP
%% module (`gen_server', `rpc', ...) or `{Module, Function, Arity}'. An unknown name is a
%% compile error.
%% @end
-module(partisan_transform).

-export([parse_transform/2, format_error/1]).
-export([send/2, send/3]).

%% =============================================================================
%% Compile time
%% =============================================================================

%% @doc The parse transform (see the module documentation). Options are read from the module's
%% `-partisan_transform(Opts)' attributes and the compile option `{partisan_transform, Opts}'.
-spec parse_transform([erl_parse:abstract_form() | erl_parse:form_info()], [compile:option()]) ->
    [erl_parse:abstract_form() | erl_parse:form_info()]
    | {error, [{file:filename(), [{erl_anno:anno(), module(), term()}]}], []}.
parse_transform(Forms, Options) ->
    Given = [{Anno, Opts} || {attribute, Anno, partisan_transform, Opts} <- Forms]
        ++ [{erl_anno:new(0), Opts} || {partisan_transform, Opts} <- Options],
    case skip_list(Given, [], []) of
        {ok, Skip} ->
            partisan_transform_walk:forms(Forms, partisan_transform_walk:context(Forms, Skip));
        {error, Errors} ->
            {error, [{file(Forms), Errors}], []}
    end.

%% @doc Describes a `partisan_transform' compile error.
-spec format_error(term()) -> string().
format_error({bad_option, Opts}) ->
    lists:flatten(io_lib:format(
        "partisan_transform options must be a list of {skip, [Rewrite]}; got ~tp", [Opts]));
format_error({unknown_skip, Item}) ->
    lists:flatten(io_lib:format(
        "partisan_transform cannot skip ~tp: it names no rewrite; use '!', a BIF name "
        "(self, node, send, monitor, ...), {Name, Arity}, an OTP module (gen_server, rpc, ...) "
        "or {Module, Function, Arity}", [Item]));
format_error(Other) ->
    lists:flatten(io_lib:format("partisan_transform: ~tp", [Other])).

skip_list([], Skip, []) ->
    {ok, Skip};
skip_list([], _, Errors) ->
    {error, lists:reverse(Errors)};
skip_list([{Anno, Opts} | Rest], Skip, Errors) ->
    case options(Opts) of
        {ok, Items} ->
            Unknown = [{Anno, ?MODULE, {unknown_skip, I}}
                       || I <- Items, not partisan_transform_rules:known_skip(I)],
            skip_list(Rest, Items ++ Skip, lists:reverse(Unknown) ++ Errors);
        error ->
            skip_list(Rest, Skip, [{Anno, ?MODULE, {bad_option, Opts}} | Errors])
    end.

options(Opts) when is_list(Opts) ->
    case lists:all(fun({skip, Items}) -> is_list(Items); (_) -> false end, Opts) of
        true -> {ok, lists:append([Items || {skip, Items} <- Opts])};
        false -> error
    end;
options(_) ->
    error.

file(Forms) ->
    case [F || {attribute, _, file, {F, _}} <- Forms] of
        [F | _] -> F;
        [] -> "nofile"
    end.

%% =============================================================================
%% Run time
%% =============================================================================

%% @doc `Dest ! Msg' over Partisan; returns `Msg', as `!' does. `Dest' is a pid, a registered
%% name, `{Name, Node}', a reference (an alias) or a Partisan remote reference. A destination on
%% this node is sent to with `erlang:send/2', so an unregistered local name raises `badarg'
%% exactly as `!' does. A message to another node goes through `partisan:forward_message/2' and,
%% like `!', never raises: when the node is not connected (or its queue is full) the message is
%% dropped, and nothing is logged. A term that is no destination at all raises `badarg'.
-spec send(Dest :: term(), Msg) -> Msg.
send(Dest, Msg) ->
    case route(Dest) of
        {local, To} ->
            erlang:send(To, Msg);
        remote ->
            _ = forward(Dest, Msg),
            Msg;
        drop ->
            Msg;
        error ->
            erlang:error(badarg, [Dest, Msg])
    end.

%% @doc `erlang:send(Dest, Msg, Opts)' over Partisan: returns `ok', or, when the message to
%% another node was not sent, `noconnect' if `noconnect' is in `Opts' and the node is not
%% connected, `nosuspend' if `nosuspend' is in `Opts' and its queue is full. Other failures to
%% another node are silent (`ok'), as with `erlang:send/3'. `Opts' other than a list of
%% `noconnect' and `nosuspend', or a `Dest' that is no destination, raise `badarg'.
-spec send(Dest :: term(), Msg :: term(), [noconnect | nosuspend]) -> ok | noconnect | nosuspend.
send(Dest, Msg, Opts) ->
    valid_send_opts(Opts) orelse erlang:error(badarg, [Dest, Msg, Opts]),
    case route(Dest) of
        {local, To} ->
            erlang:send(To, Msg, Opts);
        remote ->
            case forward(Dest, Msg) of
                {error, not_connected} -> flag(noconnect, Opts);
                {error, queue_full} -> flag(nosuspend, Opts);
                _ -> ok
            end;
        drop ->
            ok;
        error ->
            erlang:error(badarg, [Dest, Msg, Opts])
    end.

valid_send_opts(Opts) ->
    is_list(Opts) andalso lists:all(fun(O) -> O =:= noconnect orelse O =:= nosuspend end, Opts).

flag(Flag, Opts) ->
    case lists:member(Flag, Opts) of
        true -> Flag;
        false -> ok
    end.

%% Where a message goes: `{local, To}' for erlang:send/2,3, `remote' for Partisan, `drop' for a
%% name reference of this node whose name cannot be registered (not an existing atom), `error'
%% for a term that is no destination.
route(Pid) when is_pid(Pid); is_reference(Pid) ->
    case node(Pid) =:= node() of
        true -> {local, Pid};
        false -> remote
    end;
route(Port) when is_port(Port) ->
    {local, Port};
route(Name) when is_atom(Name) ->
    {local, Name};
route({Name, Node}) when is_atom(Name), is_atom(Node) ->
    case Node =:= node() orelse Node =:= partisan:node() of
        true -> {local, {Name, node()}};
        false -> remote
    end;
route(Ref) ->
    case partisan_remote_ref:is_type(Ref) of
        false -> error;
        true ->
            case partisan_remote_ref:is_local(Ref) of
                false -> remote;
                true -> local_ref(Ref)
            end
    end.

local_ref(Ref) ->
    try partisan_remote_ref:to_term(Ref) of
        Name when is_atom(Name) -> {local, {Name, node()}};
        PidOrAlias -> {local, PidOrAlias}
    catch
        error:badarg -> drop
    end.

%% A send to another node never raises, whatever the state of the data plane.
forward(Dest, Msg) ->
    try partisan:forward_message(Dest, Msg)
    catch error:_ -> {error, not_sent}
    end.
