%% A `partisan_plumtree_broadcast_handler' for the tests: a versioned key-value store in ETS.
%% A broadcast `{Key, Version, Value}' is new where the node holds an older version of `Key'.
-module(partisan_test_store).
-behaviour(partisan_plumtree_broadcast_handler).

-export([start/0, put/3, get/1, all/0]).
-export([broadcast_data/1, merge/2, is_stale/1, graft/1, exchange/1]).

%% Creates the table, owned by a process that lives as long as the node.
start() ->
    Self = self(),
    spawn(fun() -> ets:new(?MODULE, [named_table, public]), Self ! ready, receive stop -> ok end end),
    receive ready -> ok end.

%% Stores locally, then broadcasts (as Partisan's callers do).
put(Key, Version, Value) ->
    true = merge({Key, Version}, Value),
    partisan:broadcast({Key, Version, Value}, ?MODULE).

get(Key) ->
    case ets:lookup(?MODULE, Key) of [{Key, V, Value}] -> {V, Value}; [] -> undefined end.

all() -> lists:sort(ets:tab2list(?MODULE)).

broadcast_data({Key, Version, Value}) -> {{Key, Version}, Value}.

merge({Key, Version}, Value) ->
    case is_stale({Key, Version}) of
        true -> false;
        false -> ets:insert(?MODULE, {Key, Version, Value})
    end.

is_stale({Key, Version}) ->
    case ets:lookup(?MODULE, Key) of [{Key, V, _}] -> V >= Version; [] -> false end.

graft({Key, Version}) ->
    case ets:lookup(?MODULE, Key) of
        [{Key, Version, Value}] -> {ok, Value};
        _ -> stale
    end.

exchange(_Node) -> ignore.
