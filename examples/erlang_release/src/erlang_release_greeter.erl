%% @doc Greets every node that comes up, over Partisan: a `gen_server' call to the greeter of the
%% other node through `partisan_gen_server' (the request and its reply travel on the `data'
%% channel), printed with the answer.
-module(erlang_release_greeter).
-behaviour(gen_server).

-export([start_link/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-include_lib("kernel/include/logger.hrl").

%% @doc Starts the registered greeter.
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @private
init([]) ->
    ok = partisan:monitor_nodes(true),
    %% Peer discovery may have joined a node before this subscription: `nodeup' comes only for
    %% later ones (as with `net_kernel:monitor_nodes/1'), so the nodes up now are greeted too.
    {ok, lists:foldl(fun greet_once/2, #{}, partisan:nodes())}.

%% @private
handle_call({hello, FromNode}, _From, State) ->
    io:format("erlang_release: ~p greeted ~p~n", [FromNode, partisan:node()]),
    {reply, {welcome, partisan:node()}, State};
handle_call(_, _From, State) ->
    {reply, {error, unknown_call}, State}.

%% @private
handle_cast(_, State) ->
    {noreply, State}.

%% @private
handle_info({nodeup, Node}, Greeted) ->
    {noreply, greet_once(Node, Greeted)};
handle_info({nodedown, Node}, Greeted) ->
    ?LOG_INFO("~p is down", [Node]),
    {noreply, maps:remove(Node, Greeted)};
handle_info(_, State) ->
    {noreply, State}.

%% Greets `Node' unless it was greeted since it last came up (a node up at subscription time
%% may also send `nodeup'). Not from this process: two greeters calling each other at once
%% would wait on each other.
greet_once(Node, Greeted) when is_map_key(Node, Greeted) ->
    Greeted;
greet_once(Node, Greeted) ->
    _ = spawn(fun() -> greet(Node, 10) end),
    Greeted#{Node => true}.

%% `{nodeup, Node}' comes with this node's first connection to `Node': the call goes once every
%% channel is up. Its answer travels on `Node''s own connections to this one, which may still be
%% opening, and `Node''s greeter may not be registered yet: such a call is tried again, a few
%% times.
greet(Node, 0) ->
    ?LOG_WARNING("~p did not answer", [Node]);
greet(Node, Tries) ->
    _ = wait_connected(Node, 50),
    try partisan_gen_server:call({?MODULE, Node}, {hello, partisan:node()},
                                 [{timeout, 1000}, {channel, data}]) of
        Reply -> io:format("erlang_release: ~p answered ~p~n", [Node, Reply])
    catch
        %% The other node's partisan is up before its application has registered its greeter.
        exit:{noproc, _} ->
            timer:sleep(200),
            greet(Node, Tries - 1);
        exit:{Reason, _} when Reason =:= timeout; element(1, Reason) =:= nodedown ->
            greet(Node, Tries - 1)
    end.

wait_connected(_Node, 0) ->
    false;
wait_connected(Node, Tries) ->
    partisan:is_fully_connected(Node) orelse
        begin timer:sleep(100), wait_connected(Node, Tries - 1) end.
