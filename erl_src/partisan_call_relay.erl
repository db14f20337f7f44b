%% @doc The server side of remote calls: hands OTP's own servers a local `From' and sends their
%% answer back over the data plane.
%%
%% A remote `partisan_gen_server:call' arrives here as one message. The relay monitors the server
%% with an alias (`erlang:monitor/3' with `{alias, reply_demonitor}') and passes it the request
%% as OTP's `gen:call' would, with `From = {Caller, [alias | Mref]}': the server is OTP's
%% unchanged `gen_server' (or `gen_statem', `gen_event', `supervisor', `sys'), `gen:reply/2'
%% sends the answer to the alias, and the relay forwards it to the caller's node. If the server
%% dies first, the monitor's `DOWN' goes back instead, with the real exit reason (`noproc' for a
%% name nobody registered). So a remote call costs one round trip and its failures are OTP's.
%%
%% The relay also runs functions for remote callers (`partisan_erpc', remote `spawn',
%% `process_info', ...) in a monitored worker per request, delivers replies to aliases of this
%% node that a server on another node answered (`partisan_gen:reply/2'), and forgets the calls of
%% a node the monitor layer declared lost. Pending calls expire with the caller's timeout, so a
%% server that never answers leaks nothing here.
%%
%% Eight relays run on every node (`partisan_otp:relay_for/1' picks one per caller).
-module(partisan_call_relay).
-behaviour(gen_server).
%% OTP's alias replies are the improper list [alias | Mref] (gen:reply/2).
-dialyzer({no_improper_lists, handle_info/2}).

%% OTP's call tag `[alias | Mref]' is an improper list.
-dialyzer(no_improper_lists).

-export([start_link/1, node_lost/1, pending/0, execute/6]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(SWEEP_MS, 1000).

-record(pending, {node :: node(), id :: non_neg_integer(), tag :: reference(),
                  channel :: atom(), object :: term(),
                  expires :: integer() | infinity}).

%% @doc Starts relay `N', registered as `partisan_otp:relay_name(N)'.
-spec start_link(0..7) -> {ok, pid()} | {error, term()}.
start_link(N) ->
    gen_server:start_link({local, partisan_otp:relay_name(N)}, ?MODULE, [], []).

%% @doc `Node' is gone: its callers will never read an answer, so their calls are dropped.
-spec node_lost(node()) -> ok.
node_lost(Node) ->
    %% While partisan stops, the relays may be gone before the monitor hears of the last nodes.
    lists:foreach(fun(Relay) -> catch Relay ! {partisan_node_lost, Node} end, partisan_otp:relays()).

%% @doc Calls and function runs in progress on this node's relays (for tests and monitoring).
-spec pending() -> non_neg_integer().
pending() ->
    lists:sum([gen_server:call(R, pending) || R <- partisan_otp:relays()]).

%% @private The worker of a remote function run: applies `{M, F, A}' and sends the outcome to the
%% caller (`{ok, Value}' or `{Class, Reason, Stacktrace}').
-spec execute(node(), non_neg_integer(), reference(), atom(), module(), {atom(), [term()]}) -> ok.
execute(Node, Id, Tag, Channel, M, {F, A}) ->
    Result = try {ok, apply(M, F, A)} catch Class:Reason:Stack -> {Class, Reason, Stack} end,
    _ = partisan_otp:send(Node, {reply, Id}, {Tag, Result}, #{channel => Channel}),
    ok.

-record(state, {pending = #{} :: #{reference() => #pending{}},
                sweep_armed = false :: boolean()}).

%% @private
-spec init([]) -> {ok, #state{}}.
init([]) ->
    {ok, #state{}}.

%% @private
-spec handle_call(term(), gen_server:from(), #state{}) -> {reply, term(), #state{}}.
handle_call(pending, _From, S) ->
    {reply, map_size(S#state.pending), S};
handle_call(_, _From, S) ->
    {reply, {error, unknown_call}, S}.

%% @private
-spec handle_cast(term(), #state{}) -> {noreply, #state{}}.
handle_cast(_, S) ->
    {noreply, S}.

%% @private
-spec handle_info(term(), #state{}) -> {noreply, #state{}}.
handle_info({'$partisan_call', Caller, Node, Id, Tag, Channel, Timeout, Label, Server, Request}, S) ->
    P = #pending{node = Node, id = Id, tag = Tag, channel = Channel, object = Server,
                 expires = expires(Timeout)},
    case partisan_otp:local(Server) of
        {ok, Target} ->
            Mref = erlang:monitor(process, Target, [{alias, reply_demonitor}]),
            Answers = P#pending{channel = partisan_otp:server_channel(Target, Channel)},
            %% OTP's From: the caller's pid (a remote pid when the VM is alive) and a tag that
            %% makes gen:reply/2 answer through our alias, whatever the caller's node.
            To = case is_pid(Caller) of true -> Caller; false -> self() end,
            catch erlang:send(Target, {Label, {To, [alias | Mref]}, Request}, [noconnect]),
            {noreply, add(Mref, Answers, S)};
        error ->
            %% Not a process of this node (a name nobody registered, a pid of another
            %% incarnation): what OTP's monitor would say.
            answer(P, {'DOWN', Tag, process, down_object(Server), noproc}),
            {noreply, S}
    end;
handle_info({[alias | Mref], Reply}, S = #state{pending = Pending}) ->
    case maps:take(Mref, Pending) of
        {P, Rest} ->
            erlang:demonitor(Mref, [flush]),
            answer(P, {P#pending.tag, Reply}),
            {noreply, S#state{pending = Rest}};
        error ->
            {noreply, S}
    end;
handle_info({'DOWN', Mref, process, _, Reason}, S = #state{pending = Pending}) ->
    case maps:take(Mref, Pending) of
        {#pending{object = {worker, _}}, Rest} when Reason =:= normal ->
            {noreply, S#state{pending = Rest}};
        {P = #pending{tag = Tag, object = Object}, Rest} ->
            answer(P, {'DOWN', Tag, process, down_object(Object), Reason}),
            {noreply, S#state{pending = Rest}};
        error ->
            {noreply, S}
    end;
handle_info({'$partisan_apply', Node, Id, Tag, Channel, Timeout, M, F, A}, S) ->
    {Pid, Mref} = spawn_monitor(?MODULE, execute, [Node, Id, Tag, Channel, M, {F, A}]),
    {noreply, add(Mref, #pending{node = Node, id = Id, tag = Tag, channel = Channel,
                                 object = {worker, Pid}, expires = expires(Timeout)}, S)};
handle_info({'$partisan_cast', M, F, A}, S) ->
    _ = spawn(fun() -> apply(M, F, A) end),
    {noreply, S};
handle_info({'$partisan_alias_reply', Alias, Msg}, S) ->
    Alias ! Msg,
    {noreply, S};
handle_info({partisan_node_lost, Node}, S) ->
    {noreply, forget(fun(P) -> P#pending.node =:= Node end, S)};
handle_info(sweep, S) ->
    Now = erlang:monotonic_time(millisecond),
    S1 = forget(fun(#pending{expires = E}) -> E =/= infinity andalso E =< Now end,
                S#state{sweep_armed = false}),
    {noreply, arm(S1)};
handle_info(_, S) ->
    {noreply, S}.

add(Mref, P = #pending{expires = infinity}, S = #state{pending = Pending}) ->
    S#state{pending = Pending#{Mref => P}};
add(Mref, P, S = #state{pending = Pending}) ->
    arm(S#state{pending = Pending#{Mref => P}}).

%% One sweep timer at a time, while calls with a deadline are pending.
arm(S = #state{sweep_armed = true}) ->
    S;
arm(S = #state{pending = Pending}) ->
    case lists:any(fun(#pending{expires = E}) -> E =/= infinity end, maps:values(Pending)) of
        true -> erlang:send_after(?SWEEP_MS, self(), sweep), S#state{sweep_armed = true};
        false -> S
    end.

%% Drops the calls nobody waits for any more (their monitors with them); a running worker is
%% left to finish, as erpc's are.
forget(Drop, S = #state{pending = Pending}) ->
    Kept = maps:filter(fun(Mref, P) ->
                               case Drop(P) of
                                   true -> erlang:demonitor(Mref, [flush]), false;
                                   false -> true
                               end
                       end, Pending),
    S#state{pending = Kept}.

down_object(Name) when is_binary(Name) -> {Name, partisan:node()};
down_object({worker, Pid}) -> Pid;
down_object(Object) -> Object.

answer(#pending{node = Node, id = Id, channel = Channel}, Msg) ->
    _ = partisan_otp:send(Node, {reply, Id}, Msg, #{channel => Channel}),
    ok.

expires(infinity) -> infinity;
%% A little after the caller's own deadline: the caller decides what a timeout is.
expires(Ms) -> erlang:monotonic_time(millisecond) + Ms + ?SWEEP_MS.
