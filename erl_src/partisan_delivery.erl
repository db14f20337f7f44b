%% @doc A delivery lane's process: decodes the received messages its lane holds and sends them
%% on, from this process's scheduler.
%%
%% The data plane's readers deliver a lone message themselves; the messages of a stream they
%% queue on the lane of their sender node, and this process takes them in batches
%% (`partisan_nif:deliver_pending/1'), which costs the receiving node less CPU per message than
%% one `enif_send' from a reader thread each (see the README's internals). One lane per scheduler
%% online, all started before the data plane; a restarted lane process drains what waited.
-module(partisan_delivery).

-export([start_link/2, lanes/0]).
-export([init/3]).

%% @doc How many lanes the node runs: one per scheduler online.
-spec lanes() -> pos_integer().
lanes() ->
    min(erlang:system_info(schedulers_online), 64).

%% @doc Starts the process of lane `Index' (0-based) of `Count'.
-spec start_link(non_neg_integer(), pos_integer()) -> {ok, pid()}.
start_link(Index, Count) ->
    proc_lib:start_link(?MODULE, init, [self(), Index, Count]).

%% @private
-spec init(pid(), non_neg_integer(), pos_integer()) -> no_return().
init(Parent, Index, Count) ->
    Waiting = partisan_nif:set_delivery_lane(Index, Count),
    proc_lib:init_ack(Parent, {ok, self()}),
    Waiting andalso drain(Index),
    loop(Index).

loop(Index) ->
    receive
        '$partisan_deliver' -> drain(Index);
        _ -> ok
    end,
    loop(Index).

drain(Index) ->
    case partisan_nif:deliver_pending(Index) of
        true -> drain(Index);
        false -> ok
    end.
