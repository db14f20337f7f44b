%% @doc Plumtree broadcast (Partisan's `partisan_plumtree_broadcast'), with dissemination in Rust.
%%
%% `broadcast/2' asks the handler module for `{MsgId, Payload}' and hands both to the data
%% plane, which pushes them down the broadcast tree over the overlay's neighbours. This process
%% answers the core's questions with the handler's callbacks: `merge/2' for every message not
%% seen before (only new messages travel on), `graft/1' when a neighbour needs a message the core
%% no longer caches, and `exchange/1' on every anti-entropy tick. Ids and payloads travel as
%% `term_to_binary({Mod, MsgId})' and `term_to_binary(Payload)'.
%%
%% Enable with `{broadcast, true}'; `lazy_tick_period' and `exchange_tick_period' tune the
%% protocol.
-module(partisan_plumtree_broadcast).
-behaviour(gen_server).

-export([start_link/0, broadcast/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-include_lib("kernel/include/logger.hrl").

%% @doc Starts the registered broadcast process.
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Broadcasts `Broadcast' to every node through the tree; `Mod' is its handler module. The
%% caller has applied it locally already (as in Partisan). `{error, overloaded}' when the data
%% plane's request queue is full (65,536 requests waiting).
-spec broadcast(term(), module()) -> ok | {error, broadcast_disabled | not_started | overloaded}.
broadcast(Broadcast, Mod) ->
    case partisan_config:get(broadcast, false) of
        true ->
            {MsgId, Payload} = Mod:broadcast_data(Broadcast),
            partisan_nif:broadcast(term_to_binary({Mod, MsgId}), term_to_binary(Payload));
        false ->
            {error, broadcast_disabled}
    end.

%% @private
init([]) -> {ok, #{}}.

%% @private
handle_call(_, _From, S) -> {reply, {error, unknown_call}, S}.

%% @private
handle_cast(_, S) -> {noreply, S}.

%% @private
handle_info({partisan_event, bcast_deliver, IdBin, PayloadBin, From}, S) ->
    {Handler, IsNew} =
        try
            {Mod, MsgId} = binary_to_term(IdBin),
            {Mod, Mod:merge(MsgId, binary_to_term(PayloadBin)) =:= true}
        catch
            Class:Reason ->
                ?LOG_WARNING("partisan broadcast from ~p not merged: ~p:~p", [From, Class, Reason]),
                {undefined, false}
        end,
    ok = partisan_nif:broadcast_merged(IdBin, IsNew),
    partisan_telemetry:execute([partisan, broadcast, delivered],
                               #{count => 1, size => byte_size(PayloadBin)},
                               #{from => From, handler => Handler, new => IsNew}),
    {noreply, S};
handle_info({partisan_event, bcast_graft, Node, IdBin, Round}, S) ->
    Payload = try binary_to_term(IdBin) of
                  {Mod, MsgId} ->
                      case Mod:graft(MsgId) of
                          {ok, P} -> term_to_binary(P);
                          _ -> undefined
                      end
              catch
                  _:_ -> undefined
              end,
    ok = partisan_nif:broadcast_grafted(Node, IdBin, Round, Payload),
    {noreply, S};
handle_info({partisan_event, bcast_exchange, Node}, S) ->
    _ = [catch Mod:exchange(Node) || Mod <- partisan_config:get(broadcast_mods, [])],
    {noreply, S};
handle_info(_, S) ->
    {noreply, S}.
