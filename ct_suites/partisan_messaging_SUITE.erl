%% Messaging over a three-node cluster: every kind of destination on every channel, every pair
%% of nodes, ordering under parallelism, monotonic channels, large messages and send errors.
-module(partisan_messaging_SUITE).

-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1]).
-export([every_destination_on_every_channel/1, every_pair_of_nodes/1,
         order_per_sender_under_parallelism/1, order_per_partition_key/1,
         monotonic_channel_delivers_latest/1, large_messages/1, large_binaries_in_terms/1,
         large_maps/1, a_stream_is_delivered_from_the_schedulers/1,
         a_full_lane_stalls_only_its_stream/1, unknown_node/1, unknown_channel/1]).
%% Run on peers.
-export([remote_refs/2, send_streams/5, send_behind_bulk/3, send_large_shapes/1,
         send_lane_stream/3, start_sinks/1, sink_counts/1, hold_lanes/0, start_fill_senders/2,
         stop_fill_senders/1, burst/2]).

-define(CHANNELS, [undefined, data, state]).
-define(ENV, #{channels => #{data => #{parallelism => 4}, state => #{monotonic => true}},
               connection_interval => 100, connection_jitter => 100}).
-define(TIMEOUT, 10000).

all() ->
    [every_destination_on_every_channel, every_pair_of_nodes, order_per_sender_under_parallelism,
     order_per_partition_key, monotonic_channel_delivers_latest, large_messages,
     large_binaries_in_terms, large_maps, a_stream_is_delivered_from_the_schedulers,
     a_full_lane_stalls_only_its_stream, unknown_node, unknown_channel].

init_per_suite(Config) ->
    {ok, Peers} = partisan_ct:start_cluster([msg_a, msg_b, msg_c], ?ENV),
    [{peers, Peers} | Config].

end_per_suite(Config) ->
    partisan_ct:stop_cluster(proplists:get_value(peers, Config)).

%% -- tests --------------------------------------------------------------------

every_destination_on_every_channel(Config) ->
    [A, B, _] = cluster(Config),
    Fwd = rpc(B, partisan_ct, forwarder, [self()]),
    true = rpc(B, erlang, register, [msg_dest, Fwd]),
    %% Default format, then every format.
    Refs = [rpc(B, partisan_remote_ref, from_term, [Fwd]),
            rpc(B, partisan_remote_ref, from_term, [msg_dest])
            | rpc(B, ?MODULE, remote_refs, [Fwd, msg_dest])],
    Sends = [{forward_message, [Dest, {C, Dest}, #{channel => C}], {C, Dest}}
             || C <- ?CHANNELS, Dest <- [Fwd, {msg_dest, B} | Refs]]
        ++ [{forward_message, [B, msg_dest, {C, by_node}, #{channel => C}], {C, by_node}}
            || C <- ?CHANNELS]
        ++ [{send, [Fwd, sent], sent},
            {cast_message, [Fwd, cast], {'$gen_cast', cast}},
            {cast_message, [B, msg_dest, cast, #{channel => data}], {'$gen_cast', cast}}],
    lists:foreach(fun({F, Args, Expected}) ->
                          ?assertEqual(ok, rpc(A, partisan, F, Args)),
                          ?assertEqual(Expected, recv(Fwd))
                  end, Sends).

every_pair_of_nodes(Config) ->
    Nodes = cluster(Config),
    [?assertEqual({ok, Nodes}, rpc(N, partisan_peer_service, members, [])) || N <- Nodes],
    [?assertEqual(Nodes -- [N], rpc(N, partisan, nodes, [])) || N <- Nodes],
    [begin
         Fwd = rpc(To, partisan_ct, forwarder, [self()]),
         ?assertEqual(ok, rpc(From, partisan, forward_message, [Fwd, {From, To}, #{channel => data}])),
         ?assertEqual({From, To}, recv(Fwd))
     end || From <- Nodes, To <- Nodes, From =/= To].

%% Eight processes on A each send 5000 numbered messages to one process on B over a channel of
%% four connections: each sender's messages arrive in order, none lost or duplicated.
order_per_sender_under_parallelism(Config) ->
    check_streams(Config, [[S] || S <- lists:seq(1, 8)], false).

%% Four processes on A each interleave four partition keys: per key, order holds.
order_per_partition_key(Config) ->
    check_streams(Config, [lists:seq(K, K + 3) || K <- [1, 5, 9, 13]], true).

%% On a monotonic channel a queued message is replaced by a newer one to the same process from
%% the same sender: the connection is kept busy writing a 32 MiB message (to another
%% destination), so the 2000 small ones pile up behind it and replace each other. What arrives
%% is in order and ends with the latest; every message either arrived or was counted replaced.
monotonic_channel_delivers_latest(Config) ->
    [A, B, _] = cluster(Config),
    Fwd = rpc(B, partisan_ct, forwarder, [self()]),
    Replaced = fun() -> maps:get(replaced_monotonic, rpc(A, partisan, stats, [])) end,
    Before = Replaced(),
    ok = rpc(A, ?MODULE, send_behind_bulk, [Fwd, state, 2000]),
    Got = recv_until(Fwd, {mono, 2000}),
    ?assertEqual(lists:usort(Got), Got),
    Superseded = Replaced() - Before,
    ct:pal("monotonic: ~p of 2000 messages delivered, ~p replaced", [length(Got), Superseded]),
    ?assert(Superseded > 0),
    ?assertEqual(2000, length(Got) + Superseded).

large_messages(Config) ->
    [A, B, _] = cluster(Config),
    Fwd = rpc(B, partisan_ct, forwarder, [self()]),
    lists:foreach(fun(Size) ->
                          Msg = {large, crypto:strong_rand_bytes(Size)},
                          ?assertEqual(ok, rpc(A, partisan, send, [Fwd, Msg, #{channel => data}])),
                          ?assertEqual(Msg, recv(Fwd))
                  end, [100 * 1024, 1024 * 1024, 8 * 1024 * 1024]),
    %% Messages that are themselves binaries, small and large (the writer copies payloads under
    %% 16 KiB into its batch and writes larger ones from their own buffer).
    lists:foreach(fun(Size) ->
                          Bin = crypto:strong_rand_bytes(Size),
                          ?assertEqual(ok, rpc(A, partisan, send, [Fwd, Bin, #{channel => data}])),
                          ?assertEqual(Bin, recv(Fwd))
                  end, [4095, 4096, 4097, 100 * 1024, 1024 * 1024]).

%% Terms that carry large binaries are sent with the binaries referenced, not copied (the NIF
%% writes the External Term Format of the levels above them itself): every shape arrives equal
%% to what was sent, in order with small messages, and a binary appended to after the send
%% arrives as it was when sent. The receiver keeps such binaries in the buffer they were read
%% into.
large_binaries_in_terms(Config) ->
    [A, B, _] = cluster(Config),
    Fwd = rpc(B, partisan_ct, forwarder, [self()]),
    Sent = rpc(A, ?MODULE, send_large_shapes, [Fwd]),
    ?assert(length(Sent) > 20),
    [?assertEqual(Msg, recv(Fwd)) || Msg <- Sent],
    %% The receiver holds a large binary where the socket wrote it, not a copy of it: a copy is
    %% a binary of its own size; a binary kept in place is a sub-binary of a resource binary
    %% over the received payload, whose referenced size is the resource's.
    Probe = rpc(B, erlang, spawn, [fun() ->
                                           receive {probe, Bin} ->
                                               Fwd ! {probed, byte_size(Bin), binary:referenced_byte_size(Bin)}
                                           end
                                   end]),
    Big = binary:copy(<<"b">>, 200 * 1024),
    ?assertEqual(ok, rpc(A, partisan, forward_message, [Probe, {probe, Big}, #{channel => data}])),
    {probed, Size, Referenced} = recv(Fwd),
    ?assertEqual(byte_size(Big), Size),
    ?assertNotEqual(Size, Referenced).

%% Maps of more than 32 keys (hash maps) crash OTP 25's VM when decoded off a scheduler
%% (erlang/otp#8208): they are decoded by `partisan_decoder', in order with the rest of the
%% connection's messages, and the receiving node lives on. Also as the answer to a call.
large_maps(Config) ->
    [A, B, _] = cluster(Config),
    Fwd = rpc(B, partisan_ct, forwarder, [self()]),
    Maps = [maps:from_list([{I, v} || I <- lists:seq(1, N)]) || N <- [32, 33, 129, 5000]],
    Msgs = lists:append([[{small, N}, {map, N, M}, {nested, [#{k => M}]}]
                         || {N, M} <- lists:zip(lists:seq(1, length(Maps)), Maps)]),
    [?assertEqual(ok, rpc(A, partisan, forward_message, [Fwd, Msg, #{partition_key => 7}])) || Msg <- Msgs],
    [?assertEqual(Msg, recv(Fwd)) || Msg <- Msgs],
    Big = lists:last(Maps),
    Server = rpc(B, erlang, spawn, [fun() -> receive {'$gen_call', From, get} -> gen:reply(From, Big) end end]),
    ?assertEqual(Big, rpc(A, partisan_gen_server, call, [Server, get, 5000])),
    ?assertEqual(B, rpc(B, erlang, node, [])).

%% A stream of small messages goes through B's delivery lanes (queued by the reader, delivered
%% by a `partisan_delivery' process on a scheduler): every message arrives, in order, maps of
%% more than 32 keys among them (decoded right there) and 64 KiB ones (decoded by the reader once
%% the lane has drained), and messages to a process that is gone are counted `undeliverable', as
%% from a reader.
a_stream_is_delivered_from_the_schedulers(Config) ->
    [A, B, _] = cluster(Config),
    Fwd = rpc(B, partisan_ct, forwarder, [self()]),
    Gone = rpc(B, erlang, spawn, [fun() -> ok end]),
    ok = partisan_ct:wait_until(fun() -> not rpc(B, erlang, is_process_alive, [Gone]) end, ?TIMEOUT),
    Before = rpc(B, partisan, stats, []),
    Count = 20000,
    ?assertEqual(ok, rpc(A, ?MODULE, send_lane_stream, [Fwd, Gone, Count])),
    Got = [recv(Fwd) || _ <- lists:seq(1, Count)],
    ?assertEqual(lists:seq(1, Count), [N || {lane, N, _} <- Got]),
    ?assertEqual(33, map_size(element(3, lists:nth(100, Got)))),
    ?assertEqual(65536, byte_size(element(3, lists:nth(150, Got)))),
    Delta = fun(Key) -> maps:get(Key, rpc(B, partisan, stats, [])) - maps:get(Key, Before) end,
    ?assertEqual(ok, partisan_ct:wait_until(fun() -> Delta(undeliverable) >= Count div 100 end, ?TIMEOUT)),
    ?assertEqual(Count div 100, Delta(undeliverable)),
    ?assert(Delta(lane_messages) > 0).

%% B's delivery lanes are held (their processes suspended) while 16 processes on A stream 8 KiB
%% messages to two processes on B over the four connections of `data': A's lane on B fills up
%% (64 MiB) and the readers of the stream wait for room. A waiting reader must not hold one of
%% B's I/O threads (there are two on a 2-core machine): more readers than that get to wait, and
%% B still writes a burst to C meanwhile. Once the lanes run again every message arrives, in order
%% per sender.
a_full_lane_stalls_only_its_stream(Config) ->
    [A, B, C] = cluster(Config),
    Sinks = rpc(B, ?MODULE, start_sinks, [2]),
    Holder = rpc(B, ?MODULE, hold_lanes, []),
    Waits = fun() -> maps:get(lane_full_waits, rpc(B, partisan, stats, [])) end,
    Waits0 = Waits(),
    Senders = rpc(A, ?MODULE, start_fill_senders, [Sinks, 16]),
    %% The senders stop and the lanes run again whatever the checks find: a failure must not
    %% leave B's lanes held and A streaming into the suite's next cases.
    Held = try while_lane_is_full(B, C, Waits, Waits0) catch Class:Reason:Stack -> {Class, Reason, Stack} end,
    Sent = rpc(A, ?MODULE, stop_fill_senders, [Senders]),
    Holder ! release,
    case Held of
        ok -> ok;
        {Class1, Reason1, Stack1} -> erlang:raise(Class1, Reason1, Stack1)
    end,
    Delivered = fun() -> lists:sum([N || {N, _} <- rpc(B, ?MODULE, sink_counts, [Sinks])]) end,
    ?assertEqual(ok, partisan_ct:wait_until(fun() -> Delivered() >= Sent end, 60000)),
    ?assertMatch([{_, 0}, {_, 0}], rpc(B, ?MODULE, sink_counts, [Sinks])),
    ?assertEqual(Sent, Delivered()).

%% Within a reader's 10 s wait three or more of B's readers wait at once, and B writes a burst
%% to C meanwhile.
while_lane_is_full(B, C, Waits, Waits0) ->
    ?assertEqual(ok, partisan_ct:wait_until(fun() -> Waits() - Waits0 >= 3 end, 9000)),
    Fwd = rpc(C, partisan_ct, forwarder, [self()]),
    ?assertEqual(ok, rpc(B, ?MODULE, burst, [Fwd, 200])),
    ?assertEqual(lists:seq(1, 200), [N || {burst, N} <- [recv(Fwd) || _ <- lists:seq(1, 200)]]),
    ok.

unknown_node(Config) ->
    [A, B, _] = cluster(Config),
    Fwd = rpc(B, partisan_ct, forwarder, [self()]),
    ?assertEqual({error, not_connected},
                 rpc(A, partisan, forward_message, ['nobody@127.0.0.1', some_name, hi, #{}])),
    Ref = ['nobody@127.0.0.1' | <<"Pid#<0.80.0>">>],
    ?assertEqual({error, not_connected}, rpc(A, partisan, forward_message, [Ref, hi, #{}])),
    %% The node is still fine for known destinations.
    ?assertEqual(ok, rpc(A, partisan, forward_message, [Fwd, hi, #{}])),
    ?assertEqual(hi, recv(Fwd)).

unknown_channel(Config) ->
    [A, B, _] = cluster(Config),
    Fwd = rpc(B, partisan_ct, forwarder, [self()]),
    ?assertEqual({error, {unknown_channel, nope}},
                 rpc(A, partisan, forward_message, [Fwd, hi, #{channel => nope}])),
    ?assertEqual({error, {unknown_channel, nope}},
                 rpc(A, partisan, forward_message, [B, msg_nope, hi, [{channel, nope}]])),
    %% A local destination fails the same way.
    ?assertEqual({error, {unknown_channel, nope}},
                 rpc(B, partisan, forward_message, [Fwd, hi, #{channel => nope}])),
    ?assertEqual(ok, rpc(B, partisan, forward_message, [Fwd, local_hi, #{channel => data}])),
    ?assertEqual(local_hi, recv(Fwd)).

%% -- run on peers ---------------------------------------------------------------

%% Remote references to `Pid' and `Name' in every format, made on the node they live on.
remote_refs(Pid, Name) ->
    Refs = [begin
                ok = application:set_env(partisan, remote_ref_format, F),
                [partisan_remote_ref:from_term(Pid), partisan_remote_ref:from_term(Name)]
            end || F <- [improper_list, tuple, uri]],
    ok = application:unset_env(partisan, remote_ref_format),
    lists:append(Refs).

%% One process per element of `SenderStreams' sends `{Stream, N}' for N in 1..Count, for each
%% of its streams in turn, on `Channel' (with `partition_key => Stream' when `Keyed').
%% Returns the distinct results of all sends.
send_streams(Dest, Channel, SenderStreams, Count, Keyed) ->
    Parent = self(),
    Opts = fun(S) -> [{channel, Channel} | [{partition_key, S} || Keyed]] end,
    Send = fun(Streams) ->
                   [partisan:forward_message(Dest, {S, N}, Opts(S)) || N <- lists:seq(1, Count), S <- Streams]
           end,
    Pids = [spawn_link(fun() -> Parent ! {self(), Send(Streams)} end) || Streams <- SenderStreams],
    lists:usort(lists:append([receive {P, Results} -> Results end || P <- Pids])).

%% From one process (one connection, one monotonic key per destination): a 32 MiB message to
%% a name nobody registered on `Dest''s node, then `{mono, N}' for N in 1..Count to `Dest'.
send_behind_bulk(Dest, Channel, Count) ->
    Bulk = binary:copy(<<0>>, 32 bsl 20),
    ok = partisan:forward_message(node(Dest), no_such_process, Bulk, #{channel => Channel}),
    Results = [partisan:forward_message(Dest, {mono, N}, #{channel => Channel})
               || N <- lists:seq(1, Count)],
    [ok] = lists:usort(Results),
    ok.

%% From one process, as fast as it can: `{lane, N, Extra}' to `Dest' for N in 1..Count (`Extra' a
%% map of 33 keys every 100th message, followed by a message to `Gone', and a 64 KiB binary in
%% the 50th of every hundred).
send_lane_stream(Dest, Gone, Count) ->
    Map = maps:from_list([{I, v} || I <- lists:seq(1, 33)]),
    Big = binary:copy(<<7>>, 65536),
    Results = [case N rem 100 of
                   0 -> [partisan:forward_message(Dest, {lane, N, Map}, #{}),
                         partisan:forward_message(Gone, {lane, N}, #{})];
                   50 -> [partisan:forward_message(Dest, {lane, N, Big}, #{})];
                   _ -> [partisan:forward_message(Dest, {lane, N, x}, #{})]
               end || N <- lists:seq(1, Count)],
    [ok] = lists:usort(lists:append(Results)),
    ok.

%% `Count' processes counting `{fill, Sender, N, _}' messages, and those that came after a
%% higher N of their sender (out of order).
start_sinks(Count) ->
    [spawn(fun() -> sink(0, #{}, 0) end) || _ <- lists:seq(1, Count)].

sink(Count, Last, Disorder) ->
    receive
        {fill, Sender, N, _} ->
            Prev = maps:get(Sender, Last, 0),
            Late = case N > Prev of true -> 0; false -> 1 end,
            sink(Count + 1, Last#{Sender => N}, Disorder + Late);
        {count, From} ->
            From ! {count, self(), {Count, Disorder}},
            sink(Count, Last, Disorder)
    end.

%% `{Delivered, OutOfOrder}' of each sink.
sink_counts(Sinks) ->
    [begin S ! {count, self()}, receive {count, S, C} -> C after 5000 -> timeout end end || S <- Sinks].

%% Suspends this node's delivery lane processes until the returned process gets `release' (a
%% suspension ends with the process that made it).
hold_lanes() ->
    Parent = self(),
    Holder = spawn(fun() ->
                           Lanes = [P || {{partisan_delivery, _}, P, _, _} <- supervisor:which_children(partisan_sup)],
                           [true = erlang:suspend_process(P) || P <- Lanes],
                           Parent ! {held, self()},
                           receive release -> [true = erlang:resume_process(P) || P <- Lanes] end
                   end),
    receive {held, Holder} -> Holder end.

%% `Senders' processes each send `{fill, I, N, <<8 KiB>>}' for N = 1, 2, ... on `data' (partition
%% key I), to the sinks in turn, until `stop_fill_senders/1'; `{error, queue_full}' is retried
%% after 1 ms.
start_fill_senders(Sinks, Senders) ->
    Bin = binary:copy(<<1>>, 8192),
    [spawn(fun() -> fill(Sinks, I, 1, Bin) end) || I <- lists:seq(1, Senders)].

fill(Sinks, I, N, Bin) ->
    receive
        {stop, From} -> From ! {sent, self(), N - 1}
    after 0 ->
        Dest = lists:nth(1 + N rem length(Sinks), Sinks),
        case partisan:forward_message(Dest, {fill, I, N, Bin}, #{channel => data, partition_key => I}) of
            ok -> fill(Sinks, I, N + 1, Bin);
            {error, queue_full} -> receive after 1 -> fill(Sinks, I, N, Bin) end
        end
    end.

%% Stops the senders of `start_fill_senders/2'; returns how many messages they sent.
stop_fill_senders(Senders) ->
    [S ! {stop, self()} || S <- Senders],
    lists:sum([receive {sent, S, N} -> N end || S <- Senders]).

%% `{burst, N}' for N in 1..Count to `Dest', as fast as one process sends.
burst(Dest, Count) ->
    [ok] = lists:usort([partisan:forward_message(Dest, {burst, N}, #{}) || N <- lists:seq(1, Count)]),
    ok.

%% Sends terms holding binaries of 16 KiB and more in many shapes to `Dest', each followed by
%% a small message; returns what was sent, in order.
send_large_shapes(Dest) ->
    Big = crypto:strong_rand_bytes(100 * 1024),
    Big2 = crypto:strong_rand_bytes(20 * 1024),
    <<_:7/binary, Sub:(50 * 1024)/binary, _/binary>> = Big,
    %% A binary its process may still append to, appended to after the send.
    Writable = <<(crypto:strong_rand_bytes(1))/binary, Big/binary>>,
    Shapes = [Big, {tag, Big}, {'$gen_call', {self(), make_ref()}, {put, key, Big}},
              [Big, small, Big2], [a | Big], [Big | Big2], #{k => Big, other => 1, Big2 => v},
              {a, {b, [c, {d, Big}]}}, {1, {2, {3, {4, {5, Big}}}}}, Sub, {sub, Sub},
              <<Big/binary, 1:3>>, list_to_tuple(lists:duplicate(300, x) ++ [Big2]),
              lists:duplicate(100, Big2), {Big, Big}, {},
              {1.5, -3, 1 bsl 70, "str", <<"small">>, self(), make_ref(), fun erlang:node/0, Big},
              maps:from_list([{I, Big2} || I <- lists:seq(1, 40)]), Writable],
    Sent = lists:append([[Shape, {after_shape, N}]
                         || {N, Shape} <- lists:zip(lists:seq(1, length(Shapes)), Shapes)]),
    [ok = partisan:forward_message(Dest, Msg, #{channel => data}) || Msg <- Sent],
    Appended = <<Writable/binary, "appended after the send">>,
    true = byte_size(Appended) > byte_size(Writable),
    Sent.

%% -- helpers ------------------------------------------------------------------

cluster(Config) -> partisan_ct:nodes(proplists:get_value(peers, Config)).

rpc(Node, M, F, A) ->
    partisan_ct:rpc(Node, M, F, A).

recv(From) ->
    case partisan_ct:recv(From, ?TIMEOUT) of
        {ok, Msg} -> Msg;
        {error, timeout} -> ct:fail({no_message_from, From})
    end.

recv_until(From, Last) ->
    case recv(From) of
        Last -> [Last];
        Msg -> [Msg | recv_until(From, Last)]
    end.

check_streams(Config, SenderStreams, Keyed) ->
    [A, B, _] = cluster(Config),
    Count = 5000,
    Fwd = rpc(B, partisan_ct, forwarder, [self()]),
    ?assertEqual([ok], rpc(A, ?MODULE, send_streams, [Fwd, data, SenderStreams, Count, Keyed])),
    Streams = lists:append(SenderStreams),
    Got = [recv(Fwd) || _ <- lists:seq(1, Count * length(Streams))],
    [?assertEqual({S, lists:seq(1, Count)}, {S, [N || {S1, N} <- Got, S1 =:= S]}) || S <- Streams].
