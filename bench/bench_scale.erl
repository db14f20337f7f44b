%% @doc The BEAM member of `make bench-scale': a partisan node on HyParView with Plumtree, joined
%% by the Rust members of the `scale' example, which asks it to originate broadcasts.
%%
%% `main/0' starts partisan with the members' overlay settings, prints `BEAM <spec>' on stdout
%% for the script, and registers `bench_scale_origin': a message `{broadcast, Tag}' broadcasts a
%% 64-byte payload under id `Tag' with this module as the handler (the Rust members report it as
%% handler `bench_scale'). The node halts when its standard input closes.
-module(bench_scale).
-behaviour(partisan_plumtree_broadcast_handler).

-export([main/0]).
-export([broadcast_data/1, merge/2, is_stale/1, graft/1, exchange/1]).

%% @doc Starts the node (see the module doc).
-spec main() -> no_return().
main() ->
    Env = #{peer_service_manager => partisan_hyparview_peer_service_manager,
            hyparview => #{active_max_size => 6, active_min_size => 3, passive_max_size => 30,
                           shuffle_interval => 2000, random_promotion_interval => 1000},
            broadcast => true, broadcast_mods => [?MODULE],
            connection_interval => 200, connection_jitter => 200,
            max_pending_handshakes_per_addr => 256,
            cookie => <<"scale-bench-cookie">>},
    [ok = application:set_env(partisan, K, V) || {K, V} <- maps:to_list(Env)],
    {ok, _} = application:ensure_all_started(partisan),
    ets:new(?MODULE, [named_table, public]),
    Origin = spawn(fun origin/0),
    true = register(bench_scale_origin, Origin),
    #{listen_addrs := [#{ip := Ip, port := Port} | _]} = partisan:node_spec(),
    io:format("BEAM ~s=~s:~b~n", [node(), inet:ntoa(Ip), Port]),
    %% Until the script closes our stdin.
    _ = io:get_line(""),
    erlang:halt(0).

origin() ->
    receive
        {broadcast, Tag} ->
            true = merge(Tag, <<0:512>>),
            ok = partisan:broadcast({Tag, <<0:512>>}, ?MODULE);
        _ ->
            ok
    end,
    origin().

%% @private
broadcast_data({Tag, Payload}) -> {Tag, Payload}.

%% @private
merge(Tag, Payload) ->
    ets:insert_new(?MODULE, {Tag, Payload}).

%% @private
is_stale(Tag) -> ets:member(?MODULE, Tag).

%% @private
graft(Tag) ->
    case ets:lookup(?MODULE, Tag) of
        [{Tag, Payload}] -> {ok, Payload};
        [] -> stale
    end.

%% @private
exchange(_Node) -> ignore.
