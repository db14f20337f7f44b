%% A membership strategy written in Erlang for the tests: nodes form a ring ordered by name and
%% link only to their two ring neighbours, while learning every member by gossip along the ring.
%% A node it was told to join, or that joined it, stays linked until the next periodic tick, so
%% their first messages can cross.
-module(partisan_ring_strategy).
-behaviour(partisan_membership_strategy).

-export([init/1, join/3, leave/2, periodic/1, handle_message/2]).

init(#{name := Name} = Me) ->
    {ok, [Me], #{me => Me, known => #{Name => Me}, contacts => #{}}}.

join(S, #{name := Name} = Spec, _PeerState) ->
    S1 = learn([Spec], S#{contacts := (maps:get(contacts, S))#{Name => Spec}}),
    {ok, members(S1), [{Name, known(S1)}], S1}.

leave(S = #{me := #{name := Me} = MeSpec}, #{name := Me}) ->
    Out = [{N, {ring_leave, Me}} || N <- maps:keys(maps:get(known, S)), N =/= Me],
    {ok, [MeSpec], Out, S#{known := #{Me => MeSpec}, contacts := #{}}};
leave(S = #{known := Known}, #{name := Name}) ->
    S1 = S#{known := maps:remove(Name, Known)},
    {ok, members(S1), [{N, {ring_leave, Name}} || N <- neighbours(S1)], S1}.

periodic(S) ->
    S1 = S#{contacts := #{}},
    {ok, members(S1), [{N, known(S1)} || N <- neighbours(S1)], S1}.

handle_message(S = #{known := Known}, {ring_known, From, Specs}) ->
    S1 = learn(Specs, S),
    %% Answer a node we have no link with yet (it joined us) so it learns the ring too.
    Contacts = case maps:is_key(From, maps:get(known, S1)) andalso not lists:member(From, neighbours(S1)) of
        true -> (maps:get(contacts, S1))#{From => maps:get(From, maps:get(known, S1))};
        false -> maps:get(contacts, S1)
    end,
    S2 = S1#{contacts := Contacts},
    Changed = maps:get(known, S2) =/= Known,
    Out = [{N, known(S2)} || Changed, N <- neighbours(S2)] ++
          [{From, known(S2)} || not lists:member(From, neighbours(S2)), Changed orelse not maps:is_key(From, Known)],
    {ok, members(S2), Out, S2};
handle_message(S = #{known := Known}, {ring_leave, Name}) ->
    S1 = S#{known := maps:remove(Name, Known)},
    {ok, members(S1), [], S1}.

learn(Specs, S = #{known := Known}) ->
    S#{known := lists:foldl(fun(#{name := N} = Sp, Acc) -> Acc#{N => Sp} end, Known, Specs)}.

known(#{me := #{name := Me}, known := Known}) -> {ring_known, Me, maps:values(Known)}.

%% The predecessor and successor of this node in the ring of known names.
neighbours(#{me := #{name := Me}, known := Known}) ->
    Ring = lists:sort(maps:keys(Known)),
    case length(Ring) of
        1 -> [];
        Len ->
            I = index(Me, Ring, 1),
            lists:usort([lists:nth((I rem Len) + 1, Ring), lists:nth(((I - 2 + Len) rem Len) + 1, Ring)])
    end.

index(X, [X | _], I) -> I;
index(X, [_ | T], I) -> index(X, T, I + 1).

members(S = #{me := Me, known := Known, contacts := Contacts}) ->
    [Me | [maps:get(N, Known) || N <- neighbours(S)]] ++ maps:values(maps:without(neighbours(S), Contacts)).
