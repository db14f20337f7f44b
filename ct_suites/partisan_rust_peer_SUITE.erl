%% Rust programs as cluster peers: three BEAM nodes and two Rust peers (the `partisan_peer'
%% crate's `echo' example, real OS processes) on the full mesh and on HyParView. Messages travel
%% both ways by registered name and by pid, a Rust peer killed with kill -9 is reported down, and
%% a Plumtree broadcast reaches both kinds of nodes, from either kind.
-module(partisan_rust_peer_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, init_per_suite/1, end_per_suite/1,
         init_per_group/2, end_per_group/2, init_per_testcase/2, end_per_testcase/2]).
-export([rust_peers_are_members/1, messages_by_name_and_pid_both_ways/1,
         killed_rust_peer_is_reported_down/1, broadcasts_reach_both_kinds/1]).

-define(TIMEOUT, 20000).
-define(ENV, #{broadcast => true, broadcast_mods => [partisan_test_store],
               lazy_tick_period => 200, exchange_tick_period => 1000,
               connection_interval => 100, connection_jitter => 100,
               channels => #{data => #{parallelism => 2}}}).
-define(HYPARVIEW, #{active_max_size => 3, active_min_size => 2,
                     shuffle_interval => 1000, random_promotion_interval => 500}).

all() -> [{group, full_mesh}, {group, hyparview}].

groups() ->
    Cases = [rust_peers_are_members, messages_by_name_and_pid_both_ways,
             broadcasts_reach_both_kinds, killed_rust_peer_is_reported_down],
    [{full_mesh, [sequence], Cases}, {hyparview, [sequence], Cases}].

init_per_suite(Config) ->
    case build_echo() of
        {ok, Bin} -> [{echo, Bin} | Config];
        {error, Why} -> ct:fail({cannot_build_the_rust_peer, Why})
    end.

end_per_suite(Config) -> Config.

init_per_group(full_mesh, Config) -> [{overlay, full_mesh} | Config];
init_per_group(hyparview, Config) -> [{overlay, hyparview} | Config].

end_per_group(_, Config) -> Config.

init_per_testcase(_Case, Config) ->
    Overlay = proplists:get_value(overlay, Config),
    Env = case Overlay of
              full_mesh -> ?ENV;
              hyparview -> ?ENV#{peer_service_manager => partisan_hyparview_peer_service_manager,
                                 hyparview => ?HYPARVIEW}
          end,
    Peers = [begin {ok, P} = partisan_ct:start_node(N, Env), P end || N <- [rp1, rp2, rp3]],
    Nodes = [First | _] = partisan_ct:nodes(Peers),
    [ok = partisan_ct:rpc(N, partisan_test_store, start, []) || N <- Nodes],
    Seed = partisan_ct:rpc(First, partisan, node_spec, []),
    [ok = partisan_ct:rpc(N, partisan_peer_service, join, [Seed]) || N <- tl(Nodes)],
    %% Events of the Rust peers arrive at a forwarder registered on the first BEAM node.
    Reports = partisan_ct:rpc(First, partisan_ct, forwarder, [self()]),
    true = partisan_ct:rpc(First, erlang, register, [rust_reports, Reports]),
    Rust = [start_rust(proplists:get_value(echo, Config), Name, First, Seed, Overlay)
            || Name <- ['rust1@127.0.0.1', 'rust2@127.0.0.1']],
    All = Nodes ++ [N || {N, _} <- Rust],
    ok = wait(fun() -> connected(Overlay, Nodes, All) end),
    [{peers, Peers}, {nodes, Nodes}, {rust, Rust}, {reports, Reports} | Config].

end_per_testcase(_Case, Config) ->
    [catch port_close(Port) || {_, Port} <- proplists:get_value(rust, Config, [])],
    partisan_ct:stop_cluster(proplists:get_value(peers, Config)).

%% -- cases -------------------------------------------------------------------

rust_peers_are_members(Config) ->
    Nodes = ?config(nodes, Config),
    [R1, R2] = [N || {N, _} <- ?config(rust, Config)],
    ok = case ?config(overlay, Config) of
             %% Every BEAM node has both Rust peers as members and neighbours.
             full_mesh ->
                 wait(fun() -> lists:all(fun(N) -> knows(N, R1) andalso knows(N, R2) end, Nodes) end);
             %% Partial views: each Rust peer is some BEAM node's neighbour.
             hyparview ->
                 wait(fun() ->
                              Views = [{N, partisan_ct:rpc(N, partisan, nodes, [])} || N <- Nodes],
                              lists:all(fun(R) -> lists:any(fun({_, V}) -> lists:member(R, V) end, Views) end, [R1, R2])
                      end)
         end,
    %% And the Rust peers heard of BEAM nodes coming up.
    {ok, {peer_event, _, {node_up, Up}}} = partisan_ct:recv(?config(reports, Config), ?TIMEOUT),
    ?assert(lists:member(Up, Nodes ++ [R1, R2])).

messages_by_name_and_pid_both_ways(Config) ->
    [N1, N2 | _] = ?config(nodes, Config),
    [R1, R2] = [N || {N, _} <- ?config(rust, Config)],
    %% With ack: delivered through the overlay on HyParView, whatever the views do meanwhile.
    Opts = #{ack => true},
    [begin
         Fwd = partisan_ct:rpc(N1, partisan_ct, forwarder, [self()]),
         %% BEAM -> Rust by registered name; the Rust peer answers the BEAM pid.
         ok = partisan_ct:rpc(N1, partisan, forward_message, [R, echo, {Fwd, {ping, R}}, Opts]),
         {ok, {echo, RustPid, {ping, R}}} = partisan_ct:recv(Fwd, ?TIMEOUT),
         ?assertEqual(R, node(RustPid)),
         %% BEAM -> Rust by pid.
         ok = partisan_ct:rpc(N1, partisan, forward_message, [R, RustPid, {Fwd, by_pid}, Opts]),
         {ok, {echo, RustPid, by_pid}} = partisan_ct:recv(Fwd, ?TIMEOUT),
         %% Rust -> BEAM by registered name, on another BEAM node.
         Sink = partisan_ct:rpc(N2, partisan_ct, forwarder, [self()]),
         true = partisan_ct:rpc(N2, erlang, register, [rust_sink, Sink]),
         Big = crypto:strong_rand_bytes(300000),
         Term = #{from => R, binary => Big, list => [1, 2.5, -7, 1 bsl 70, <<"x">>], pid => Fwd},
         ok = partisan_ct:rpc(N1, partisan, forward_message, [R, echo, {send_named, N2, rust_sink, Term}, Opts]),
         {ok, Got} = partisan_ct:recv(Sink, ?TIMEOUT),
         ?assertEqual(Term, Got),
         true = partisan_ct:rpc(N2, erlang, unregister, [rust_sink])
     end || R <- [R1, R2]],
    %% Rust -> Rust, by name through the first peer's echo.
    Fwd2 = partisan_ct:rpc(N1, partisan_ct, forwarder, [self()]),
    ok = partisan_ct:rpc(N1, partisan, forward_message,
                         [R1, echo, {send_named, R2, echo, {Fwd2, from_rust1}}, Opts]),
    {ok, {echo, P2, from_rust1}} = partisan_ct:recv(Fwd2, ?TIMEOUT),
    ?assertEqual(R2, node(P2)).

killed_rust_peer_is_reported_down(Config) ->
    Nodes = ?config(nodes, Config),
    [{_, _}, {R2, Port2}] = ?config(rust, Config),
    Watchers = [{N, partisan_ct:rpc(N, partisan_ct, node_monitor, [self()])} || N <- Nodes],
    Neighbours = [N || N <- Nodes, lists:member(R2, partisan_ct:rpc(N, partisan, nodes, []))],
    ?assertNotEqual([], Neighbours),
    {os_pid, OsPid} = erlang:port_info(Port2, os_pid),
    _ = os:cmd("kill -9 " ++ integer_to_list(OsPid)),
    %% Every node that had it as a neighbour reports it down and drops it from nodes().
    [{ok, {nodedown, R2}} = recv_nodedown(W, R2) || {N, W} <- Watchers, lists:member(N, Neighbours)],
    ok = wait(fun() -> not lists:any(fun(N) -> lists:member(R2, partisan_ct:rpc(N, partisan, nodes, [])) end, Nodes) end).

broadcasts_reach_both_kinds(Config) ->
    Nodes = [N1 | _] = ?config(nodes, Config),
    Rust = [R1, R2] = [N || {N, _} <- ?config(rust, Config)],
    Reports = ?config(reports, Config),
    %% From a BEAM node: every BEAM store and both Rust peers get it.
    Key = {from_beam, make_ref()},
    ok = partisan_ct:rpc(N1, partisan_test_store, put, [Key, 1, <<"v1">>]),
    ok = wait(fun() -> lists:all(fun(N) -> partisan_ct:rpc(N, partisan_test_store, get, [Key]) =:= {1, <<"v1">>} end, Nodes) end),
    ?assertEqual(lists:sort(Rust), lists:sort(broadcast_reports(Reports, Key, 2))),
    %% From a Rust peer: every BEAM store merges it; the other Rust peer reports it once.
    Key2 = {from_rust, make_ref()},
    ok = partisan_ct:rpc(N1, partisan, forward_message,
                         [R1, echo, {broadcast, partisan_test_store, {Key2, 1}, <<"v2">>}, #{transitive => true}]),
    ok = wait(fun() -> lists:all(fun(N) -> partisan_ct:rpc(N, partisan_test_store, get, [Key2]) =:= {1, <<"v2">>} end, Nodes) end),
    ?assertEqual([R2], broadcast_reports(Reports, Key2, 1)).

%% -- helpers -----------------------------------------------------------------

%% Builds the example with cargo (a no-op when it is up to date) and finds the executable.
build_echo() ->
    Root = filename:dirname(filename:dirname(code:which(partisan))),
    Top = find_workspace(Root),
    Cmd = "cd '" ++ Top ++ "' && cargo build --release --locked -q -p partisan_peer --example echo "
          "--message-format=json 2>&1",
    Out = os:cmd(Cmd),
    case re:run(Out, "\"executable\":\"([^\"]+/echo)\"", [{capture, all_but_first, list}]) of
        {match, [Bin]} -> {ok, Bin};
        nomatch -> {error, lists:sublist(Out, 2000)}
    end.

%% The repository that holds the partisan application (its Cargo.toml).
find_workspace(Dir) ->
    case filelib:is_regular(filename:join(Dir, "Cargo.toml")) of
        true -> Dir;
        false when Dir =:= "/" -> error(no_cargo_workspace);
        false -> find_workspace(filename:dirname(Dir))
    end.

start_rust(Bin, Name, First, Seed, Overlay) ->
    #{listen_addrs := [#{ip := Ip, port := Port} | _]} = Seed,
    Cookie = partisan_ct:rpc(First, partisan_config, get, [cookie]),
    Channels = [["--channel", atom_to_list(C) ++ ":" ++ integer_to_list(maps:get(parallelism, O, 1))
                 ++ case maps:get(monotonic, O, false) of true -> ":monotonic"; false -> "" end]
                || {C, O} <- maps:to_list(partisan_ct:rpc(First, partisan_config, get, [channels]))],
    OverlayArgs = case Overlay of
                      full_mesh -> [];
                      hyparview -> ["--hyparview", "3,2"]
                  end,
    Args = ["--name", atom_to_list(Name), "--cookie", to_list(Cookie),
            "--join", atom_to_list(First) ++ "=" ++ inet:ntoa(Ip) ++ ":" ++ integer_to_list(Port),
            "--report", atom_to_list(First) ++ ":rust_reports", "--broadcast",
            "--connection-interval", "100", "--max-seconds", "120"]
           ++ lists:append(Channels) ++ OverlayArgs,
    P = open_port({spawn_executable, Bin}, [{args, Args}, {line, 4096}, exit_status, use_stdio, stderr_to_stdout]),
    receive
        {P, {data, {eol, "READY " ++ _}}} -> {Name, P};
        {P, {exit_status, S}} -> ct:fail({rust_peer_exited, Name, S})
    after ?TIMEOUT -> ct:fail({rust_peer_not_ready, Name})
    end.

to_list(B) when is_binary(B) -> binary_to_list(B);
to_list(A) when is_atom(A) -> atom_to_list(A);
to_list(L) when is_list(L) -> L.

%% The full mesh: every node connected to every other. HyParView: every node has neighbours
%% and the Rust peers are known to some BEAM node's view.
connected(full_mesh, Beam, All) ->
    lists:all(fun(N) -> lists:sort(partisan_ct:rpc(N, partisan, nodes, [])) =:= lists:sort(All -- [N]) end, Beam);
connected(hyparview, Beam, All) ->
    Rust = All -- Beam,
    lists:all(fun(N) -> partisan_ct:rpc(N, partisan, nodes, []) =/= [] end, Beam)
        andalso lists:all(fun(R) -> lists:any(fun(N) -> lists:member(R, partisan_ct:rpc(N, partisan, nodes, [])) end, Beam) end, Rust).

%% Whether BEAM node `N' has `R' in its membership (full mesh) or its views (HyParView).
knows(N, R) ->
    {ok, Members} = partisan_ct:rpc(N, partisan_peer_service, members, []),
    lists:member(R, Members).

broadcast_reports(Reports, Key, Count) ->
    broadcast_reports(Reports, Key, Count, []).

broadcast_reports(_Reports, _Key, 0, Acc) -> Acc;
broadcast_reports(Reports, Key, Count, Acc) ->
    receive
        {partisan_ct, Reports, {peer_event, From, {broadcast, partisan_test_store, {Key, 1}, _}}} ->
            broadcast_reports(Reports, Key, Count - 1, [From | Acc])
    after ?TIMEOUT -> ct:fail({broadcast_not_reported, Key, Acc})
    end.

recv_nodedown(Watcher, Node) ->
    receive
        {partisan_ct, Watcher, {nodedown, Node}} = M -> {ok, element(3, M)}
    after ?TIMEOUT -> {error, {no_nodedown, Node}}
    end.

wait(Fun) -> partisan_ct:wait_until(Fun, ?TIMEOUT).

