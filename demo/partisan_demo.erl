%% @doc `make demo': three real BEAM nodes on the Rust data plane.
%%
%% Starts three peers (no disterl between them), joins them through one seed, prints membership,
%% sends a message across every channel, kills one node with `kill -9' and shows `on_down'
%% firing on the survivors. Exits 0 on success, 1 with the reason on failure.
-module(partisan_demo).

-export([main/0, watch/1, echo/0]).

-define(CHANNELS, #{data => #{parallelism => 4}, state => #{monotonic => true}}).
-define(DEADLINE_MS, 10000).

%% @doc Runs the demo and halts the VM.
-spec main() -> no_return().
main() ->
    try run() of
        ok -> io:format("~ndemo OK~n"), halt(0)
    catch
        C:R:St ->
            io:format("~ndemo FAILED: ~p:~p~n~p~n", [C, R, St]),
            halt(1)
    end.

run() ->
    Ebin = filename:dirname(code:which(partisan)),
    DemoDir = filename:dirname(code:which(?MODULE)),
    Nodes = [start(N, Ebin, DemoDir) || N <- [alpha, beta, gamma]],
    [{_, A}, {_, B}, {PeerC, C}] = Nodes,
    step("started ~0p (each: partisan app, channels ~0p)", [[N || {_, N} <- Nodes], ?CHANNELS]),

    SpecA = erpc:call(A, partisan, node_spec, []),
    T0 = erlang:monotonic_time(microsecond),
    ok = erpc:call(B, partisan_peer_service, sync_join, [SpecA]),
    ok = erpc:call(C, partisan_peer_service, sync_join, [SpecA]),
    wait(fun() -> lists:all(fun({_, N}) -> length(erpc:call(N, partisan, nodes, [])) =:= 2 end, Nodes) end),
    step("joined through ~p; fully connected mesh in ~.1f ms", [A, (erlang:monotonic_time(microsecond) - T0) / 1000]),
    [io:format("    ~p members: ~p~n", [N, element(2, erpc:call(N, partisan_peer_service, members, []))])
     || {_, N} <- Nodes],

    Echo = erpc:call(C, erlang, spawn, [?MODULE, echo, []]),
    true = erpc:call(C, erlang, register, [demo_echo, Echo]),
    Me = self(),
    [begin
         ok = erpc:call(A, partisan, forward_message, [Echo, {Me, Ch, <<"via pid">>}, #{channel => Ch}]),
         ok = erpc:call(B, partisan, forward_message, [C, demo_echo, {Me, Ch, <<"via name">>}, #{channel => Ch}]),
         [receive {echoed, C, Ch, How} -> io:format("    ~p echoed ~s on channel ~p~n", [C, How, Ch])
          after ?DEADLINE_MS -> error({no_echo, Ch, How}) end || How <- [<<"via pid">>, <<"via name">>]]
     end || Ch <- [undefined, data, state]],
    step("messages delivered on every channel (default, data x4, monotonic state)", []),

    ok = erpc:call(A, ?MODULE, watch, [Me]),
    ok = erpc:call(B, ?MODULE, watch, [Me]),
    OsPid = erpc:call(C, os, getpid, []),
    step("kill -9 ~p (os pid ~s)", [C, OsPid]),
    T1 = erlang:monotonic_time(microsecond),
    _ = os:cmd("kill -9 " ++ OsPid),
    [receive {on_down, N, C} ->
         io:format("    on_down fired on ~p for ~p after ~.1f ms~n",
                   [N, C, (erlang:monotonic_time(microsecond) - T1) / 1000])
     after ?DEADLINE_MS -> error({no_on_down, N})
     end || N <- [A, B]],
    [io:format("    ~p partisan:nodes() = ~p~n", [N, erpc:call(N, partisan, nodes, [])]) || N <- [A, B]],
    catch peer:stop(PeerC),
    [peer:stop(P) || {P, _} <- [hd(Nodes), lists:nth(2, Nodes)]],
    ok.

start(Name, Ebin, DemoDir) ->
    {ok, Peer, Node} = peer:start(#{name => Name, host => "127.0.0.1", longnames => true,
                                    args => ["-connect_all", "false", "-pa", Ebin, "-pa", DemoDir]}),
    ok = erpc:call(Node, application, set_env, [partisan, channels, ?CHANNELS]),
    {ok, _} = erpc:call(Node, application, ensure_all_started, [partisan]),
    {Peer, Node}.

%% @doc Runs on a demo node: reports every `on_down' to `To'.
-spec watch(pid()) -> ok.
watch(To) ->
    partisan_peer_service:on_down(any, fun(Down) -> To ! {on_down, node(), Down} end).

%% @doc Runs on a demo node: answers `{From, Channel, Text}' to `From' over Distributed Erlang
%% (the demo controller is not a partisan node).
-spec echo() -> no_return().
echo() ->
    receive {From, Channel, How} -> From ! {echoed, node(), Channel, How} end,
    echo().

step(Fmt, Args) ->
    io:format("~n==> " ++ Fmt ++ "~n", Args).

wait(Fun) -> wait(Fun, erlang:monotonic_time(millisecond) + ?DEADLINE_MS).
wait(Fun, Deadline) ->
    case Fun() of
        true -> ok;
        false ->
            erlang:monotonic_time(millisecond) < Deadline orelse error(timeout),
            receive after 10 -> wait(Fun, Deadline) end
    end.
