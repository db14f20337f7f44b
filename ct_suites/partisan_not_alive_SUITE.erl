%% Partisan between VMs that are not alive (no -name: `mix test', `iex -S mix', `rebar3 shell'
%% of a project that depends on partisan). Every such VM calls itself nonode@nohost and numbers
%% its pids with creation 0, so a pid sent as is would decode on the other VM as a local pid of
%% whatever process has that number there. The peers here are started by OTP's `peer' without a
%% name (controlled over standard_io with `peer:call/4'), with the partisan `name' key set.
%%
%% Proven: pids leave a VM that is not alive as remote references of its partisan node, nested
%% anywhere, and replies to them arrive; a pid that a peer sends as is (pid_encoding => false)
%% reaches the receiver as a reference of that peer and never the local process with the same
%% number (which exists, and is watched); between alive VMs pids stay pids.
-module(partisan_not_alive_SUITE).

-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1]).
-export([pids_leave_as_remote_refs_and_replies_arrive/1,
         raw_pids_from_a_peer_never_reach_a_local_process/1,
         calls_between_vms_that_are_not_alive/1,
         alive_vms_send_pids_as_pids/1]).
%% Run on the peers.
-export([collector/1, collected/1, ask/2, pid_numbers/1, send_raw/3]).

-define(A, 'na_a@127.0.0.1').
-define(B, 'na_b@127.0.0.1').
-define(C, 'na_c@127.0.0.1').
-define(ENV, #{cookie => <<"not-alive-suite">>, connection_interval => 100,
               connection_jitter => 100}).
-define(TIMEOUT, 10000).

all() ->
    [pids_leave_as_remote_refs_and_replies_arrive,
     raw_pids_from_a_peer_never_reach_a_local_process,
     calls_between_vms_that_are_not_alive,
     alive_vms_send_pids_as_pids].

init_per_suite(Config) ->
    A = start_peer(?A, #{}),
    %% B writes references as tuples, A as improper lists (the default): a reference made by A's
    %% send path and one made by B's receive path can be told apart.
    B = start_peer(?B, #{remote_ref_format => tuple}),
    %% C sends pids as they are, as a peer that does not rewrite them would.
    C = start_peer(?C, #{pid_encoding => false}),
    SpecA = call(A, partisan, node_spec, []),
    ok = call(B, partisan_peer_service, sync_join, [SpecA]),
    ok = call(C, partisan_peer_service, sync_join, [SpecA]),
    ok = wait(fun() -> lists:all(fun({P, Others}) ->
                                         lists:all(fun(N) -> call(P, partisan, is_fully_connected, [N]) end, Others)
                                 end, [{A, [?B, ?C]}, {B, [?A, ?C]}, {C, [?A, ?B]}])
              end),
    [{peers, #{a => A, b => B, c => C}} | Config].

end_per_suite(Config) ->
    [catch peer:stop(P) || P <- maps:values(proplists:get_value(peers, Config))],
    ok.

%% -- tests --------------------------------------------------------------------

pids_leave_as_remote_refs_and_replies_arrive(Config) ->
    #{a := A, b := B} = proplists:get_value(peers, Config),
    nonode@nohost = call(A, erlang, node, []),
    nonode@nohost = call(B, erlang, node, []),
    ?A = call(A, partisan, node, []),
    Sender = call(A, ?MODULE, collector, [na_sender]),
    _ = call(B, ?MODULE, collector, [na_inbox]),
    %% The sender puts its own pid everywhere in a message to B.
    ok = call(A, ?MODULE, ask, [na_sender, {send_hello, ?B, na_inbox}]),
    ok = wait(fun() -> call(B, ?MODULE, collected, [na_inbox]) =/= [] end),
    [{hello, From, [#{pid := From}], {nested, [From, <<"bin">>]}, Ref}] = call(B, ?MODULE, collected, [na_inbox]),
    %% On B: not a pid, a remote reference of A's partisan node naming the sender, made by A
    %% (A's format).
    false = is_pid(From),
    [?A | <<"Pid#<0.", _/binary>>] = From,
    true = call(B, partisan_remote_ref, is_pid, [From]),
    ?A = call(B, partisan_remote_ref, node, [From]),
    true = call(A, partisan_remote_ref, is_local_pid, [From, Sender]),
    %% References are not rewritten (documented): it is still a reference on B.
    true = is_reference(Ref),
    %% B answers with forward_message/2 to the reference; the sender gets it, with B's own
    %% reference, which it can answer in turn.
    ok = call(B, partisan, forward_message, [From, {pong, call(B, partisan, self, [])}]),
    ok = wait(fun() -> [M || {pong, _} = M <- call(A, ?MODULE, collected, [na_sender])] =/= [] end),
    [{pong, RefB}] = [M || {pong, _} = M <- call(A, ?MODULE, collected, [na_sender])],
    ?B = call(A, partisan_remote_ref, node, [RefB]),
    %% A message large enough to be rewritten on a dirty scheduler.
    ok = call(A, ?MODULE, ask, [na_sender, {send_big, ?B, na_inbox}]),
    ok = wait(fun() -> length(call(B, ?MODULE, collected, [na_inbox])) =:= 2 end),
    [_, {big, From, Big}] = call(B, ?MODULE, collected, [na_inbox]),
    300000 = byte_size(Big).

%% C does not rewrite its pids (pid_encoding => false). It sends B a pid with the very numbers
%% of a live process on B (the victim), inside a message and as the destination itself: on B the
%% former arrives as a reference of C, the latter is refused, and the victim gets nothing.
raw_pids_from_a_peer_never_reach_a_local_process(Config) ->
    #{b := B, c := C} = proplists:get_value(peers, Config),
    Victim = call(B, ?MODULE, collector, [na_victim]),
    _ = call(B, ?MODULE, collector, [na_inbox2]),
    Numbers = call(B, ?MODULE, pid_numbers, [na_victim]),
    Undeliverable0 = maps:get(undeliverable, call(B, partisan, stats, []), 0),
    ok = call(C, ?MODULE, send_raw, [?B, Numbers, na_inbox2]),
    ok = wait(fun() -> call(B, ?MODULE, collected, [na_inbox2]) =/= [] end),
    [{raw, Pid}] = call(B, ?MODULE, collected, [na_inbox2]),
    false = is_pid(Pid),
    %% Made by B's receive path (B's format), from the pid C sent as is.
    {partisan_remote_reference, ?C, {partisan_process_reference, "<0." ++ _}} = Pid,
    false = call(B, partisan_remote_ref, is_local_pid, [Pid, Victim]),
    %% The message addressed to the raw pid was dropped on B, counted as undeliverable.
    ok = wait(fun() -> maps:get(undeliverable, call(B, partisan, stats, []), 0) > Undeliverable0 end),
    %% B answering the reference reaches C, not the victim.
    ok = call(B, partisan, forward_message, [Pid, to_c]),
    [] = call(B, ?MODULE, collected, [na_victim]).

%% The OTP layer between VMs that are not alive: a gen_server call from A to a server on B.
calls_between_vms_that_are_not_alive(Config) ->
    #{a := A, b := B} = proplists:get_value(peers, Config),
    {ok, _} = call(B, partisan_otp_test_server, start, [na_kv]),
    ok = call(A, partisan_gen_server, call, [{na_kv, ?B}, {put, k, v}]),
    v = call(A, partisan_gen_server, call, [{na_kv, ?B}, {get, k}]).

%% Between alive VMs nothing is rewritten: a pid arrives as a pid of its node.
alive_vms_send_pids_as_pids(_Config) ->
    {ok, Peers} = partisan_ct:start_cluster([na_alive1, na_alive2], ?ENV),
    try
        [N1, N2] = partisan_ct:nodes(Peers),
        Fwd = partisan_ct:rpc(N2, partisan_ct, forwarder, [self()]),
        Sender = partisan_ct:rpc(N1, erlang, whereis, [partisan_peer_service_manager]),
        ok = partisan_ct:rpc(N1, partisan, forward_message, [Fwd, {pid, Sender}, #{}]),
        {ok, {pid, Got}} = partisan_ct:recv(Fwd, ?TIMEOUT),
        true = is_pid(Got),
        N1 = node(Got),
        Sender = Got
    after
        partisan_ct:stop_cluster(Peers)
    end.

%% -- run on the peers ------------------------------------------------------------

%% @doc Starts and registers a process that keeps what it receives and runs the requests of
%% `ask/2'.
-spec collector(atom()) -> pid().
collector(Name) ->
    Pid = spawn(fun() -> collect([]) end),
    true = register(Name, Pid),
    Pid.

collect(Acc) ->
    receive
        {'$collected', From} ->
            From ! {'$collected', lists:reverse(Acc)},
            collect(Acc);
        {'$ask', From, {send_hello, Node, Dest}} ->
            Me = self(),
            From ! {'$asked', partisan:forward_message(Node, Dest, {hello, Me, [#{pid => Me}],
                                                                   {nested, [Me, <<"bin">>]},
                                                                   make_ref()}, #{})},
            collect(Acc);
        {'$ask', From, {send_big, Node, Dest}} ->
            %% Encodes to more than 256 KiB: rewritten on a dirty scheduler.
            From ! {'$asked', partisan:forward_message(Node, Dest, {big, self(), binary:copy(<<7>>, 300000)}, #{})},
            collect(Acc);
        Msg ->
            collect([Msg | Acc])
    end.

%% @doc What the collector `Name' received so far.
-spec collected(atom()) -> [term()].
collected(Name) ->
    Name ! {'$collected', self()},
    receive {'$collected', Msgs} -> Msgs after ?TIMEOUT -> error(timeout) end.

%% @doc Has the collector `Name' run `Request'.
-spec ask(atom(), {send_hello | send_big, node(), atom()}) -> term().
ask(Name, Request) ->
    Name ! {'$ask', self(), Request},
    receive {'$asked', Result} -> Result after ?TIMEOUT -> error(timeout) end.

%% @doc The id and serial of a registered process.
-spec pid_numbers(atom()) -> {non_neg_integer(), non_neg_integer()}.
pid_numbers(Name) ->
    [_, Id, Serial] = string:lexemes(pid_to_list(whereis(Name)), "<.>"),
    {list_to_integer(Id), list_to_integer(Serial)}.

%% @doc Sends to `Node' a pid of this VM with the numbers `{Id, Serial}', as is: inside a message
%% to `Inbox', and as the destination of another.
-spec send_raw(node(), {non_neg_integer(), non_neg_integer()}, atom()) -> ok | {error, term()}.
send_raw(Node, {Id, Serial}, Inbox) ->
    Raw = list_to_pid(lists:flatten(io_lib:format("<0.~b.~b>", [Id, Serial]))),
    ok = partisan:forward_message(Node, Raw, {to_raw_pid, should_never_arrive}, #{}),
    partisan:forward_message(Node, Inbox, {raw, Raw}, #{}).

%% -- helpers ----------------------------------------------------------------------

start_peer(Name, Env) ->
    Paths = lists:usort([filename:dirname(code:which(M)) || M <- [partisan, ?MODULE, partisan_otp_test_server]]),
    {ok, Peer, nonode@nohost} = peer:start(#{connection => standard_io,
                                             args => lists:append([["-pa", P] || P <- Paths])}),
    [ok = peer:call(Peer, application, set_env, [partisan, K, V])
     || {K, V} <- maps:to_list(maps:merge(?ENV, Env#{name => Name}))],
    {ok, _} = peer:call(Peer, application, ensure_all_started, [partisan]),
    Peer.

call(Peer, M, F, A) ->
    peer:call(Peer, M, F, A, 15000).

wait(Fun) ->
    partisan_ct:wait_until(Fun, ?TIMEOUT).
