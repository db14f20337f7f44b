%% Delivery guarantees across lost connections: messages sent with `ack => true' are delivered
%% exactly once and in order per sender while every TCP connection between the two nodes is
%% destroyed several times (`ss -K'); a partitioned destination makes acked messages wait, not
%% fail; the per-destination budget refuses with `queue_full'; a dead destination process is
%% acknowledged and counted; a destination removed from membership has its messages counted as
%% dropped. And `connection_ping': a SIGSTOPped peer is declared down within
%% `idle_timeout + timeout * max_attempts', and up again after SIGCONT. On HyParView, where a
%% destination may not be a neighbour and views keep changing, acked messages travel through the
%% overlay acknowledged end to end: the same stream survives every connection of every node
%% being destroyed several times.
-module(partisan_ack_SUITE).

-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_testcase/2, end_per_testcase/2]).
-export([acked_stream_survives_killed_connections/1, acked_messages_wait_for_a_partition/1,
         budget_refuses_with_queue_full/1, dead_process_is_acked_and_counted/1,
         removed_destination_drops_and_counts/1, stopped_peer_is_detected_by_ping/1,
         acked_stream_over_hyparview_survives_killed_connections/1,
         calls_over_hyparview_survive_killed_connections/1,
         stopped_neighbour_is_detected_by_ping_on_hyparview/1,
         causal_acked_streams_over_hyparview_survive_killed_connections/1,
         acked_large_binaries_survive_killed_connections/1]).
%% Run on peers.
-export([receiver/1, send_stream/4, send_stream/5, call_loop/3, large_receiver/0, large_sender/1]).

-define(PING, #{enabled => true, idle_timeout => 300, timeout => 200, max_attempts => 2}).
-define(ENV, #{channels => #{data => #{parallelism => 2}},
               connection_interval => 50, connection_jitter => 50,
               retransmit_interval => 200, max_unacked_bytes => 1 bsl 20,
               handshake_timeout => 500, connection_ping => ?PING}).
-define(TIMEOUT, 15000).
-define(SENDERS, 4).
-define(PER_SENDER, 2500).
-define(KILLS, 5).
%% Five HyParView nodes with room for three neighbours each: some pairs are not neighbours.
-define(HV_NAMES, [ackhv1, ackhv2, ackhv3, ackhv4, ackhv5]).
-define(HV_ENV, maps:merge(?ENV, #{peer_service_manager => partisan_hyparview_peer_service_manager,
                                  causal_labels => [l],
                                  hyparview => #{active_max_size => 3, active_min_size => 2,
                                                 shuffle_interval => 1000,
                                                 random_promotion_interval => 500}})).

all() ->
    [acked_stream_survives_killed_connections, acked_large_binaries_survive_killed_connections,
     acked_messages_wait_for_a_partition,
     budget_refuses_with_queue_full, dead_process_is_acked_and_counted,
     removed_destination_drops_and_counts, stopped_peer_is_detected_by_ping,
     acked_stream_over_hyparview_survives_killed_connections,
     calls_over_hyparview_survive_killed_connections,
     stopped_neighbour_is_detected_by_ping_on_hyparview,
     causal_acked_streams_over_hyparview_survive_killed_connections].

init_per_testcase(stopped_neighbour_is_detected_by_ping_on_hyparview, Config) ->
    %% Three nodes with room for three neighbours: every node is every other's neighbour and no
    %% view needs to change, so only the pings can notice the stopped one.
    hyparview_cluster([ackhvp1, ackhvp2, ackhvp3], Config);
init_per_testcase(Case, Config) when Case =:= acked_stream_over_hyparview_survives_killed_connections;
                                     Case =:= calls_over_hyparview_survive_killed_connections;
                                     Case =:= causal_acked_streams_over_hyparview_survive_killed_connections ->
    hyparview_cluster(?HV_NAMES, Config);
init_per_testcase(acked_large_binaries_survive_killed_connections, Config) ->
    %% Room for many large messages in flight, so that destroyed connections lose some.
    {ok, Peers} = partisan_ct:start_cluster([ack_a, ack_b], ?ENV#{max_unacked_bytes => 16 bsl 20}),
    [{peers, Peers} | Config];
init_per_testcase(_, Config) ->
    {ok, Peers} = partisan_ct:start_cluster([ack_a, ack_b], ?ENV),
    [{peers, Peers} | Config].

hyparview_cluster(Names, Config) ->
    Peers = [begin {ok, P} = partisan_ct:start_node(N, ?HV_ENV), P end || N <- Names],
    [{_, Seed} | Rest] = Peers,
    SeedSpec = rpc(Seed, partisan, node_spec, []),
    [ok = rpc(N, partisan_peer_service, join, [SeedSpec]) || {_, N} <- Rest],
    [{peers, Peers} | Config].

end_per_testcase(_, Config) ->
    partisan_ct:stop_cluster(proplists:get_value(peers, Config)).

%% -- tests --------------------------------------------------------------------

acked_stream_survives_killed_connections(Config) ->
    [A, B] = partisan_ct:nodes(proplists:get_value(peers, Config)),
    Ports = [listen_port(N) || N <- [A, B]],
    Receiver = rpc(B, ?MODULE, receiver, [self()]),
    Total = ?SENDERS * ?PER_SENDER,
    Senders = [rpc(A, erlang, spawn, [?MODULE, send_stream, [self(), Receiver, I, ?PER_SENDER]])
               || I <- lists:seq(1, ?SENDERS)],
    %% Destroy every connection between the two nodes at evenly spaced points of the stream,
    %% waiting each time until they are all back.
    Killed = [begin
                  wait(fun() -> received(Receiver) >= K * Total div (?KILLS + 1) end),
                  N = kill_connections(Ports),
                  ok = partisan_ct:wait_fully_connected([A, B], ?TIMEOUT),
                  N
              end || K <- lists:seq(1, ?KILLS)],
    ct:pal("sockets destroyed per round: ~w", [Killed]),
    ?assert(lists:all(fun(N) -> N > 0 end, Killed)),
    [?assertEqual({sent, S, ?PER_SENDER}, receive {sent, S, _} = M -> M after 60000 -> timeout end)
     || S <- Senders],
    wait(fun() -> received(Receiver) >= Total end, 60000),
    %% Everything acknowledged: nothing more can arrive, so the count is final.
    wait(fun() -> stat(A, unacked_messages) =:= 0 end, 60000),
    {Count, Errors} = report(Receiver),
    ct:pal("A: ~p~nB: ~p", [stats(A, [retransmitted, undelivered_on_close, pings_sent, ping_timeouts]),
                           stats(B, [ack_duplicates, ack_out_of_order, messages_received])]),
    ?assertEqual([], Errors),
    ?assertEqual(Total, Count).

%% Large binaries sent with `ack' are held by reference until acknowledged (not encoded into a
%% copy), and sent again from there: three times, B is stopped (SIGSTOP), A sends a batch that
%% it hands to its connections to B, every connection is destroyed and B resumed; A resends the
%% batch. Each message arrives once, in order, with the bytes it was sent with (bare binaries of
%% 600 KB and binaries of 20-600 KB in tuples). (Held across a long wait:
%% `budget_refuses_with_queue_full'.)
acked_large_binaries_survive_killed_connections(Config) ->
    [A, B] = partisan_ct:nodes(proplists:get_value(peers, Config)),
    Ports = [listen_port(N) || N <- [A, B]],
    Receiver = rpc(B, ?MODULE, large_receiver, []),
    Sender = rpc(A, ?MODULE, large_sender, [Receiver]),
    Batch = 30,
    Send = fun(K) -> Sender ! {send, self(), lists:seq((K - 1) * Batch + 1, K * Batch)} end,
    Sent = fun(K) ->
                   Last = K * Batch,
                   receive {sent, Sender, Last} -> ok after 60000 -> error({batch_not_sent, K}) end
           end,
    Send(1),
    Sent(1),
    OsPidB = rpc(B, os, getpid, []),
    Killed = [begin
                  "" = os:cmd("kill -STOP " ++ OsPidB),
                  Send(K),
                  %% The batch now waits, unacknowledged, in the connections to the stopped B.
                  wait(fun() -> stat(A, unacked_messages) > 0 end),
                  Socks = kill_connections(Ports),
                  "" = os:cmd("kill -CONT " ++ OsPidB),
                  ok = partisan_ct:wait_fully_connected([A, B], ?TIMEOUT),
                  Sent(K),
                  Socks
              end || K <- [2, 3, 4]],
    ct:pal("sockets destroyed per round: ~w", [Killed]),
    N = 4 * Batch,
    wait(fun() -> received(Receiver) >= N end, 60000),
    wait(fun() -> stat(A, unacked_messages) =:= 0 end, 60000),
    ?assertEqual({N, []}, report(Receiver)),
    Stats = stats(A, [retransmitted, dropped_queue_full]),
    ct:pal("A: ~p", [Stats]),
    ?assert(maps:get(retransmitted, Stats) > 0).

acked_messages_wait_for_a_partition(Config) ->
    [A, B] = partisan_ct:nodes(proplists:get_value(peers, Config)),
    Fwd = rpc(B, partisan_ct, forwarder, [self()]),
    partition(A, B),
    ?assertEqual({error, not_connected}, rpc(A, partisan, forward_message, [Fwd, plain, #{}])),
    [?assertEqual(ok, rpc(A, partisan, forward_message, [Fwd, {waited, I}, #{ack => true}]))
     || I <- [1, 2, 3]],
    ?assertEqual(3, stat(A, unacked_messages)),
    heal(A, B),
    [?assertEqual({ok, {waited, I}}, partisan_ct:recv(Fwd, ?TIMEOUT)) || I <- [1, 2, 3]],
    wait(fun() -> stat(A, unacked_messages) =:= 0 end).

budget_refuses_with_queue_full(Config) ->
    [A, B] = partisan_ct:nodes(proplists:get_value(peers, Config)),
    Fwd = rpc(B, partisan_ct, forwarder, [self()]),
    partition(A, B),
    Big = binary:copy(<<7>>, 100000),
    Results = [rpc(A, partisan, forward_message, [Fwd, {I, Big}, #{ack => true}])
               || I <- lists:seq(1, 12)],
    ct:pal("~p", [Results]),
    %% 1 MiB holds 10 of them; beyond, the send is refused at once.
    ?assertEqual(lists:duplicate(10, ok) ++ lists:duplicate(2, {error, queue_full}), Results),
    heal(A, B),
    [?assertMatch({ok, {I, Big}}, partisan_ct:recv(Fwd, ?TIMEOUT)) || I <- lists:seq(1, 10)],
    wait(fun() -> stat(A, unacked_messages) =:= 0 end),
    ?assertEqual(ok, rpc(A, partisan, forward_message, [Fwd, {11, Big}, #{ack => true}])),
    ?assertMatch({ok, {11, _}}, partisan_ct:recv(Fwd, ?TIMEOUT)).

dead_process_is_acked_and_counted(Config) ->
    [A, B] = partisan_ct:nodes(proplists:get_value(peers, Config)),
    Dead = rpc(B, erlang, spawn, [erlang, is_atom, [x]]),
    wait(fun() -> not rpc(B, erlang, is_process_alive, [Dead]) end),
    Before = stat(B, undeliverable),
    ?assertEqual(ok, rpc(A, partisan, send, [Dead, lost, #{ack => true}])),
    ?assertEqual(ok, rpc(A, partisan, cast_message, [B, no_such_name, lost, #{ack => true}])),
    wait(fun() -> stat(A, unacked_messages) =:= 0 end),
    wait(fun() -> stat(B, undeliverable) =:= Before + 2 end).

removed_destination_drops_and_counts(Config) ->
    [A, B] = partisan_ct:nodes(proplists:get_value(peers, Config)),
    Fwd = rpc(B, partisan_ct, forwarder, [self()]),
    partition(A, B),
    [ok = rpc(A, partisan, forward_message, [Fwd, I, #{ack => true}]) || I <- [1, 2]],
    ok = rpc(A, partisan_peer_service, leave, [B]),
    wait(fun() -> stat(A, dropped_destination_removed) =:= 2 end),
    ?assertEqual(0, stat(A, unacked_messages)).

stopped_peer_is_detected_by_ping(Config) ->
    [A, B] = partisan_ct:nodes(proplists:get_value(peers, Config)),
    Fwd = detected_by_ping(A, B),
    ?assertEqual({ok, {on_up, B}}, partisan_ct:recv(Fwd, ?TIMEOUT)).

%% On HyParView too: a SIGSTOPped neighbour is declared down by the pings of its links, and is
%% back in the overlay after SIGCONT.
stopped_neighbour_is_detected_by_ping_on_hyparview(Config) ->
    Nodes = [A, B, C] = partisan_ct:nodes(proplists:get_value(peers, Config)),
    wait(fun() -> lists:sort(rpc(A, partisan, nodes, [])) =:= lists:sort([B, C]) end),
    _ = detected_by_ping(A, B),
    wait(fun() -> partisan_otp_ct:connected(Nodes) end).

acked_stream_over_hyparview_survives_killed_connections(Config) ->
    {Nodes, A, Target} = sender_and_non_neighbour(Config),
    ct:pal("A's neighbours: ~p; receiver on ~p", [rpc(A, partisan, nodes, []), Target]),
    Ports = [listen_port(N) || N <- Nodes],
    Receiver = rpc(Target, ?MODULE, receiver, [self()]),
    PerSender = 1000,
    Total = ?SENDERS * PerSender,
    Senders = [rpc(A, erlang, spawn, [?MODULE, send_stream, [self(), Receiver, I, PerSender]])
               || I <- lists:seq(1, ?SENDERS)],
    %% Destroy every connection of every node at evenly spaced points of the stream, waiting
    %% each time until the overlay connects every node again (its views keep changing: that is
    %% the point).
    Killed = [begin
                  wait(fun() -> received(Receiver) >= K * Total div (?KILLS + 1) end, 60000),
                  N = kill_connections(Ports),
                  wait(fun() -> partisan_otp_ct:connected(Nodes) end),
                  N
              end || K <- lists:seq(1, ?KILLS)],
    ct:pal("sockets destroyed per round: ~w", [Killed]),
    ?assert(lists:all(fun(N) -> N > 0 end, Killed)),
    [?assertEqual({sent, S, PerSender}, receive {sent, S, _} = M -> M after 60000 -> timeout end)
     || S <- Senders],
    wait(fun() -> received(Receiver) >= Total end, 60000),
    {Count, Errors} = report(Receiver),
    ct:pal("A: ~p~nreceiver's node: ~p",
           [stats(A, [messages_sent, relayed, acked_relays_retransmitted, dropped_unacknowledged]),
            stats(Target, [acked_relays_duplicates, messages_received, relayed])]),
    ?assertEqual([], Errors),
    ?assertEqual(Total, Count),
    ?assertEqual(0, stat(A, dropped_unacknowledged)).

%% Causal delivery with `ack' to a node that is not a neighbour: two senders' labelled streams
%% reach it through the overlay in order, none given up, while every connection is destroyed
%% twice.
causal_acked_streams_over_hyparview_survive_killed_connections(Config) ->
    {Nodes, A, Target} = sender_and_non_neighbour(Config),
    [B | _] = (Nodes -- [A, Target]),
    Ports = [listen_port(N) || N <- Nodes],
    Receiver = rpc(Target, ?MODULE, receiver, [self()]),
    PerSender = 300,
    Opts = #{causal_label => l, ack => true},
    Senders = [rpc(N, erlang, spawn, [?MODULE, send_stream, [self(), Receiver, I, PerSender, Opts]])
               || {I, N} <- [{1, A}, {2, B}]],
    Killed = [begin
                  wait(fun() -> received(Receiver) >= K * 2 * PerSender div 3 end, 60000),
                  N = kill_connections(Ports),
                  wait(fun() -> partisan_otp_ct:connected(Nodes) end),
                  N
              end || K <- [1, 2]],
    ct:pal("receiver on ~p (not a neighbour of ~p); sockets destroyed per round: ~w", [Target, A, Killed]),
    [?assertEqual({sent, S, PerSender}, receive {sent, S, _} = M -> M after 60000 -> timeout end)
     || S <- Senders],
    wait(fun() -> received(Receiver) >= 2 * PerSender end, 60000),
    {Count, Errors} = report(Receiver),
    #{l := Causal} = rpc(Target, partisan_causality_backend, stats, []),
    ct:pal("causal stats on ~p: ~p", [Target, Causal]),
    ?assertEqual([], Errors),
    ?assertEqual(2 * PerSender, Count),
    ?assertMatch(#{skipped := 0, late := 0}, Causal).

%% The OTP layer travels through the overlay with `ack' on HyParView: calls to a server on a node
%% that is not a neighbour all succeed while every connection of every node is destroyed three
%% times (before, a request or reply lost in a closing queue left the caller waiting).
calls_over_hyparview_survive_killed_connections(Config) ->
    {Nodes, A, Target} = sender_and_non_neighbour(Config),
    {ok, _} = rpc(Target, partisan_otp_test_server, start, [ack_store]),
    Ports = [listen_port(N) || N <- Nodes],
    Calls = 300,
    Caller = rpc(A, erlang, spawn, [?MODULE, call_loop, [self(), {ack_store, Target}, Calls]]),
    Kills = 3,
    Killed = [begin
                  ok = wait_calls(Caller, K * Calls div (Kills + 1)),
                  N = kill_connections(Ports),
                  wait(fun() -> partisan_otp_ct:connected(Nodes) end),
                  N
              end || K <- lists:seq(1, Kills)],
    ct:pal("sockets destroyed per round: ~w", [Killed]),
    ok = wait_calls(Caller, Calls),
    Failed = receive {calls_failed, Caller, F} -> F after ?TIMEOUT -> timeout end,
    ct:pal("A: ~p", [stats(A, [acked_relays_retransmitted, dropped_unacknowledged])]),
    ?assertEqual([], Failed).

%% -- on peers -----------------------------------------------------------------

%% @doc Makes `N' put-then-get calls to `Server' (10 s timeout each), telling `Owner'
%% `{calls_done, self(), I}' after each pair and `{calls_failed, self(), Failures}' at the end.
-spec call_loop(pid(), term(), pos_integer()) -> ok.
call_loop(Owner, Server, N) ->
    Failed = lists:foldl(fun(I, Acc) ->
                                 Outcome = try
                                               ok = partisan_gen_server:call(Server, {put, I, I}, 10000),
                                               I = partisan_gen_server:call(Server, {get, I}, 10000)
                                           catch
                                               Class:Reason -> {I, Class, Reason}
                                           end,
                                 Owner ! {calls_done, self(), I},
                                 case Outcome of
                                     I -> Acc;
                                     Failure -> [Failure | Acc]
                                 end
                         end, [], lists:seq(1, N)),
    Owner ! {calls_failed, self(), lists:reverse(Failed)},
    ok.


%% @doc A process that takes `{Sender, Seq}' messages, checks each sender's are 1, 2, 3, ...
%% (a gap, a duplicate or a reordering is an error) and answers `count' and `report' queries.
-spec receiver(pid()) -> pid().
receiver(_Owner) ->
    spawn(fun() -> receive_loop(#{}, 0, []) end).

receive_loop(Next, Count, Errors) ->
    receive
        {{stream, S}, Seq} ->
            Expected = maps:get(S, Next, 1),
            Errors1 = case Seq of
                          Expected -> Errors;
                          _ -> [{S, expected, Expected, got, Seq} | Errors]
                      end,
            receive_loop(Next#{S => Seq + 1}, Count + 1, lists:sublist(Errors1, 20));
        {count, From} ->
            From ! {count, self(), Count},
            receive_loop(Next, Count, Errors);
        {report, From} ->
            From ! {report, self(), Count, lists:reverse(Errors)},
            receive_loop(Next, Count, Errors)
    end.

%% @doc Sends `{{stream, I}, 1..N}' to `Receiver' with `ack', pausing 1 ms every 2 messages so
%% the stream lasts a few seconds, then tells `Owner' `{sent, self(), N}'.
-spec send_stream(pid(), pid(), pos_integer(), pos_integer()) -> ok.
send_stream(Owner, Receiver, I, N) ->
    send_stream(Owner, Receiver, I, N, #{ack => true, channel => data}).

%% @doc `send_stream/4' with these send options.
-spec send_stream(pid(), pid(), pos_integer(), pos_integer(), map()) -> ok.
send_stream(Owner, Receiver, I, N, Opts) ->
    lists:foreach(fun(Seq) ->
                          ok = partisan:forward_message(Receiver, {{stream, I}, Seq}, Opts),
                          Seq rem 2 =:= 0 andalso timer:sleep(1)
                  end, lists:seq(1, N)),
    Owner ! {sent, self(), N},
    ok.

%% @doc Receives `large_sender/1''s messages; counts those that came in order with the bytes
%% they were sent with, and the others as errors.
-spec large_receiver() -> pid().
large_receiver() ->
    spawn(fun() -> large_loop(1, 0, []) end).

large_loop(Next, Count, Errors) ->
    receive
        {count, From} ->
            From ! {count, self(), Count},
            large_loop(Next, Count, Errors);
        {report, From} ->
            From ! {report, self(), Count, lists:reverse(Errors)},
            large_loop(Next, Count, Errors);
        Msg ->
            {I, Ok} = case Msg of
                          {{large, J}, Bin} -> {J, Bin =:= large_binary(J)};
                          <<J:32, _/binary>> -> {J, Msg =:= large_message(J)}
                      end,
            Errors1 = case {I, Ok} of
                          {Next, true} -> Errors;
                          _ -> lists:sublist([{expected, Next, got, I, intact, Ok} | Errors], 20)
                      end,
            large_loop(I + 1, Count + 1, Errors1)
    end.

large_binary(I) -> binary:copy(<<(I rem 256)>>, element(I rem 4 + 1, {20000, 70000, 200000, 600000})).

%% Every fifth message is a bare binary (its number in front), the others a tuple holding one.
large_message(I) when I rem 5 =:= 0 -> <<I:32, (large_binary(I))/binary>>;
large_message(I) -> {{large, I}, large_binary(I)}.

%% @doc A process that sends `large_message(I)' to `Receiver' with `ack' for each `I' of a
%% `{send, From, Is}' request, in order, retrying a `queue_full' (the budget holds a few dozen of
%% them) after 2 ms, and answers `{sent, self(), LastI}'.
-spec large_sender(pid()) -> pid().
large_sender(Receiver) ->
    spawn(fun() -> large_sender_loop(Receiver) end).

large_sender_loop(Receiver) ->
    receive
        {send, From, Is} ->
            [send_retrying(Receiver, large_message(I), 0) || I <- Is],
            From ! {sent, self(), lists:last(Is)},
            large_sender_loop(Receiver)
    end.

send_retrying(Receiver, Msg, Retries) ->
    case partisan:forward_message(Receiver, Msg, #{ack => true, channel => data}) of
        ok -> Retries;
        {error, queue_full} when Retries < 10000 ->
            timer:sleep(2),
            send_retrying(Receiver, Msg, Retries + 1)
    end.

%% -- helpers ------------------------------------------------------------------

%% The HyParView cluster once connected, its first node, and a node that is not that node's
%% neighbour (the last node when it has them all).
sender_and_non_neighbour(Config) ->
    Nodes = [A | _] = partisan_ct:nodes(proplists:get_value(peers, Config)),
    wait(fun() -> partisan_otp_ct:connected(Nodes) end),
    Target = case (Nodes -- [A]) -- rpc(A, partisan, nodes, []) of
                 [T | _] -> T;
                 [] -> lists:last(Nodes)
             end,
    {Nodes, A, Target}.

%% SIGSTOPs `B', checks that `A' declares it down within `idle_timeout + timeout * max_attempts'
%% (not TCP's timers) and that pings timed out, then SIGCONTs it. Returns the forwarder that
%% gets A's `on_up' for B.
detected_by_ping(A, B) ->
    Fwd = rpc(A, partisan_ct, forwarder, [self()]),
    ok = rpc(A, partisan_ct, notify_on, [down, B, Fwd]),
    ok = rpc(A, partisan_ct, notify_on, [up, B, Fwd]),
    OsPid = rpc(B, os, getpid, []),
    #{idle_timeout := Idle, timeout := T, max_attempts := N} = ?PING,
    Bound = Idle + T * N,
    T0 = erlang:monotonic_time(millisecond),
    "" = os:cmd("kill -STOP " ++ OsPid),
    try
        ?assertEqual({ok, {on_down, B}}, partisan_ct:recv(Fwd, ?TIMEOUT)),
        Detected = erlang:monotonic_time(millisecond) - T0,
        ct:pal("SIGSTOPped peer declared down after ~p ms (bound ~p ms; TCP keepalive: ~~25 s)",
               [Detected, Bound]),
        %% Within the bound, not TCP's timers (~25 s): generous slack for a loaded machine, the
        %% point is which mechanism fired.
        ?assert(Detected =< Bound + 8000),
        ct:pal("A: ~p", [stats(A, [pings_sent, ping_timeouts])]),
        ?assert(stat(A, ping_timeouts) > 0)
    after
        os:cmd("kill -CONT " ++ OsPid)
    end,
    Fwd.

%% Until `Caller' has made `Count' call pairs (60 s at most).
wait_calls(Caller, Count) ->
    receive
        {calls_done, Caller, Done} when Done >= Count -> ok;
        {calls_done, Caller, _} -> wait_calls(Caller, Count)
    after 60000 -> {error, {calls_stalled_before, Count}}
    end.

received(Receiver) ->
    Receiver ! {count, self()},
    receive {count, Receiver, C} -> C after ?TIMEOUT -> error(receiver_timeout) end.

report(Receiver) ->
    Receiver ! {report, self()},
    receive {report, Receiver, C, E} -> {C, E} after ?TIMEOUT -> error(receiver_timeout) end.

listen_port(Node) ->
    #{listen_addrs := [#{port := Port} | _]} = rpc(Node, partisan, node_spec, []),
    Port.

%% Destroys every TCP connection from or to the given listen ports (both ends: every socket of
%% these connections is on this machine) and returns how many sockets were destroyed.
kill_connections(Ports) ->
    Filter = lists:join(" or ", [io_lib:format("sport = :~b or dport = :~b", [P, P]) || P <- Ports]),
    Out = os:cmd(lists:flatten(["ss -K -t -n state established '( ", Filter, " )'"])),
    length([L || L <- string:split(Out, "\n", all), string:find(L, "127.0.0.1") =/= nomatch]).

partition(A, B) ->
    {ok, B} = rpc(A, partisan_peer_service, inject_partition, [B, 0]),
    {ok, A} = rpc(B, partisan_peer_service, inject_partition, [A, 0]),
    wait(fun() -> not rpc(A, partisan_nif, is_connected, [B, undefined]) end).

heal(A, B) ->
    ok = rpc(A, partisan_peer_service, resolve_partition, [B]),
    ok = rpc(B, partisan_peer_service, resolve_partition, [A]).

stats(Node, Keys) ->
    maps:with(Keys, rpc(Node, partisan, stats, [])).

stat(Node, Key) ->
    maps:get(Key, rpc(Node, partisan, stats, [])).

wait(Fun) ->
    wait(Fun, ?TIMEOUT).

wait(Fun, Timeout) ->
    ok = partisan_ct:wait_until(Fun, Timeout).

rpc(Node, M, F, A) ->
    partisan_ct:rpc(Node, M, F, A).
