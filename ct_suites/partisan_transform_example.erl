%% @doc A small gen_server written for Distributed Erlang, compiled with
%% `partisan_transform' so that it runs over Partisan unchanged.
%%
%% Nothing below mentions Partisan except the `-compile' line: `!', `self()',
%% `node()', `gen_server:call({Name, Node}, _)', `gen_server:cast/2' and
%% `erlang:monitor(process, {Name, Node})' are rewritten by the transform into
%% `partisan_transform:send/2', `partisan:self/0', `partisan:node/0',
%% `partisan_gen_server:call/2,3', `partisan_gen_server:cast/2' and
%% `partisan:monitor/2'.
%%
%% One server runs per node, registered as `partisan_transform_example'. Every
%% client function is synchronous (it waits for its own answer), so it can be
%% run on a peer with `erpc:call/4' from a Common Test suite:
%% <ul>
%% <li>`ping(Node)': a call to the server on `Node'; `{pong, Node}'.</li>
%% <li>`whoami(Node)': the server's `{node(), self()}' as it sees them (over
%%     Partisan, `self()' is a remote reference).</li>
%% <li>`tell(Node, Msg)': a cast carrying the caller's `self()'; the server
%%     answers with `!' to it; `{told, Node, Msg}'.</li>
%% <li>`broadcast(Nodes, Msg)': `!' to `{Name, Node}' of every node, from a
%%     list comprehension; every server acknowledges with `!'.</li>
%% <li>`relay(Via, To, Msg)': the server on `Via' calls the server on `To'
%%     (a call from inside a callback) and returns its answer.</li>
%% <li>`watch_stop(Node)': monitors the server on `Node', stops it with a cast
%%     and waits for the `'DOWN''.</li>
%% </ul>
%% @end
-module(partisan_transform_example).
-behaviour(gen_server).

-compile({parse_transform, partisan_transform}).

-export([start/0, start_link/0, stop/0]).
-export([ping/1, whoami/1, tell/2, broadcast/2, relay/3, watch_stop/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(TIMEOUT, 5000).

-record(state, {started_by = self() :: term(), calls = 0 :: non_neg_integer()}).

%% =============================================================================
%% Client API
%% =============================================================================

%% @doc Starts this node's server, not linked (it outlives an `erpc' call).
-spec start() -> {ok, pid()} | {error, term()}.
start() ->
    gen_server:start({local, ?MODULE}, ?MODULE, [], []).

%% @doc Starts this node's server, linked to the caller.
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Stops this node's server.
-spec stop() -> ok.
stop() ->
    gen_server:stop(?MODULE).

%% @doc Calls the server on `Node'; `{pong, Node}'.
-spec ping(node()) -> {pong, node()}.
ping(Node) ->
    gen_server:call({?MODULE, Node}, {ping, node()}, ?TIMEOUT).

%% @doc The server on `Node' reports its `node()' and `self()'.
-spec whoami(node()) -> {node(), term()}.
whoami(Node) ->
    gen_server:call({?MODULE, Node}, whoami).

%% @doc Casts `Msg' to the server on `Node' with the caller's `self()'; the
%% server answers with `!'. `{told, Node, Msg}', or `{error, timeout}'.
-spec tell(node(), term()) -> {told, node(), term()} | {error, timeout}.
tell(Node, Msg) ->
    ok = gen_server:cast({?MODULE, Node}, {tell, self(), Msg}),
    receive
        {told, Node, Msg} = Reply -> Reply
    after ?TIMEOUT ->
        {error, timeout}
    end.

%% @doc Sends `Msg' with `!' to the server of every node in `Nodes'; returns
%% the nodes that acknowledged, in `Nodes'' order, or `{error, {missing, Ns}}'.
-spec broadcast([node()], term()) -> {ok, [node()]} | {error, {missing, [node()]}}.
broadcast(Nodes, Msg) ->
    Me = self(),
    _ = [{?MODULE, N} ! {broadcast, Me, Msg} || N <- Nodes],
    collect_acks(Nodes, Msg, []).

%% @doc Asks the server on `Via' to ping the server on `To'.
-spec relay(node(), node(), term()) -> {relayed, node(), {pong, node()}}.
relay(Via, To, Msg) ->
    gen_server:call({?MODULE, Via}, {relay, To, Msg}, ?TIMEOUT).

%% @doc Monitors the server on `Node', stops it with a cast and waits for the
%% `'DOWN'' message: `{down, Reason}', or `{error, timeout}'.
-spec watch_stop(node()) -> {down, term()} | {error, timeout}.
watch_stop(Node) ->
    Ref = erlang:monitor(process, {?MODULE, Node}),
    ok = gen_server:cast({?MODULE, Node}, stop),
    receive
        {'DOWN', Ref, process, _, Reason} -> {down, Reason}
    after ?TIMEOUT ->
        erlang:demonitor(Ref, [flush]),
        {error, timeout}
    end.

collect_acks([], _, Acked) ->
    {ok, lists:reverse(Acked)};
collect_acks(Nodes, Msg, Acked) ->
    receive
        {ack, Node, Msg} ->
            collect_acks(lists:delete(Node, Nodes), Msg, [Node | Acked])
    after ?TIMEOUT ->
        {error, {missing, Nodes}}
    end.

%% =============================================================================
%% gen_server callbacks
%% =============================================================================

%% @private
-spec init([]) -> {ok, #state{}}.
init([]) ->
    {ok, #state{}}.

%% @private
-spec handle_call(term(), gen_server:from(), #state{}) -> {reply, term(), #state{}}.
handle_call({ping, _From}, _From2, State) ->
    {reply, {pong, node()}, count(State)};
handle_call(whoami, _From, State) ->
    {reply, {node(), self()}, count(State)};
handle_call({relay, To, _Msg}, _From, State) ->
    Pong = gen_server:call({?MODULE, To}, {ping, node()}, ?TIMEOUT),
    {reply, {relayed, node(), Pong}, count(State)}.

%% @private
-spec handle_cast(term(), #state{}) -> {noreply, #state{}} | {stop, normal, #state{}}.
handle_cast({tell, From, Msg}, State) ->
    From ! {told, node(), Msg},
    {noreply, count(State)};
handle_cast(stop, State) ->
    {stop, normal, State}.

%% @private
-spec handle_info(term(), #state{}) -> {noreply, #state{}}.
handle_info({broadcast, From, Msg}, State) ->
    From ! {ack, node(), Msg},
    {noreply, count(State)};
handle_info(_, State) ->
    {noreply, State}.

count(#state{calls = N} = State) ->
    State#state{calls = N + 1}.
