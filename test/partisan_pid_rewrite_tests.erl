%% The NIF's pid rewriting (what `partisan:forward_message' does on a VM that is not alive)
%% against the VM itself: random terms encoded by `term_to_binary', rewritten by the NIF,
%% decoded by `binary_to_term' and compared with the same term where every pid of this VM was
%% replaced by `partisan_remote_ref:from_term(Pid, Node)' in the same format.
-module(partisan_pid_rewrite_tests).
-include_lib("eunit/include/eunit.hrl").

-define(NODE, 'a@127.0.0.1').
-define(FORMATS, [{improper_list, false}, {tuple, false}, {uri, false}, {uri, true}]).

setup() ->
    ok = partisan_nif:load(),
    Old = [{K, application:get_env(partisan, K)} || K <- [remote_ref_format, remote_ref_uri_padding]],
    Pids = [spawn(fun() -> receive stop -> ok end end) || _ <- lists:seq(1, 5)],
    {Old, Pids}.

cleanup({Old, Pids}) ->
    [P ! stop || P <- Pids],
    [case V of undefined -> application:unset_env(partisan, K); {ok, X} -> application:set_env(partisan, K, X) end
     || {K, V} <- Old].

rewrite_test_() ->
    {setup, fun setup/0, fun cleanup/1,
     fun({_, Pids}) ->
             [{timeout, 60, fun() -> random_terms(Pids) end},
              fun() -> funs_capture_refs(Pids) end,
              fun() -> no_pid_no_copy() end,
              fun() -> malformed() end]
     end}.

random_terms(Pids) ->
    rand:seed(exsss, {1, 2, 3}),
    lists:foreach(
      fun(_) ->
              T = gen(Pids, 4),
              [check(T, F, Pad) || {F, Pad} <- ?FORMATS]
      end, lists:seq(1, 400)).

check(T, Format, Pad) ->
    application:set_env(partisan, remote_ref_format, Format),
    application:set_env(partisan, remote_ref_uri_padding, Pad),
    Expected = replace(T),
    case partisan_nif:rewrite_pids(term_to_binary(T), node(), ?NODE, Format, Pad) of
        unchanged ->
            ?assertEqual(T, Expected);
        {ok, Etf} ->
            ?assertNotEqual(T, Expected),
            ?assertEqual(Expected, binary_to_term(Etf))
    end.

%% The model: pids of this VM become remote references of ?NODE; nothing else changes.
replace(P) when is_pid(P), node(P) =:= node() -> partisan_remote_ref:from_term(P, ?NODE);
replace([H | T]) -> [replace(H) | replace(T)];
replace(T) when is_tuple(T) -> list_to_tuple(replace(tuple_to_list(T)));
replace(M) when is_map(M) -> maps:from_list([{replace(K), replace(V)} || {K, V} <- maps:to_list(M)]);
replace(X) -> X.

gen(Pids, 0) -> leaf(Pids);
gen(Pids, D) ->
    case rand:uniform(9) of
        1 -> list_to_tuple([gen(Pids, D - 1) || _ <- lists:seq(1, rand:uniform(5) - 1)]);
        2 -> [gen(Pids, D - 1) || _ <- lists:seq(1, rand:uniform(5))];
        3 -> [gen(Pids, D - 1) | gen(Pids, D - 1)];
        4 -> maps:from_list([{gen(Pids, D - 1), gen(Pids, D - 1)} || _ <- lists:seq(1, rand:uniform(4))]);
        5 -> list_to_tuple([leaf(Pids) || _ <- lists:seq(1, 300)]);
        _ -> leaf(Pids)
    end.

leaf(Pids) ->
    case rand:uniform(12) of
        1 -> self();
        2 -> lists:nth(rand:uniform(length(Pids)), Pids);
        3 -> make_ref();
        4 -> hd(erlang:ports());
        5 -> rand:uniform(1 bsl 70) - (1 bsl 69);
        6 -> rand:uniform(300);
        7 -> rand:uniform() * 1.0e10;
        8 -> list_to_atom("atom_" ++ integer_to_list(rand:uniform(50)));
        9 -> crypto_free_bytes(rand:uniform(64));
        10 -> <<(crypto_free_bytes(3))/binary, 1:3>>;
        11 -> "a string";
        12 -> 'ümlaut_atom'
    end.

crypto_free_bytes(N) -> << <<(rand:uniform(256) - 1)>> || _ <- lists:seq(1, N) >>.

%% Free variables of a fun are rewritten too: the fun still decodes and returns the reference.
funs_capture_refs(Pids) ->
    application:set_env(partisan, remote_ref_format, improper_list),
    P = hd(Pids),
    F = fun() -> {P, self_is_not_captured} end,
    {ok, Etf} = partisan_nif:rewrite_pids(term_to_binary({F, P}), node(), ?NODE, improper_list, false),
    {F2, Ref} = binary_to_term(Etf),
    ?assertEqual(partisan_remote_ref:from_term(P, ?NODE), Ref),
    ?assertEqual({Ref, self_is_not_captured}, F2()).

%% A term without a pid of this VM is returned as is: nothing to copy, a large binary included.
no_pid_no_copy() ->
    Big = binary:copy(<<"0123456789abcdef">>, 1 bsl 16),
    ?assertEqual(unchanged, partisan_nif:rewrite_pids(term_to_binary({Big, make_ref(), [a, "b", 3]}),
                                                       node(), ?NODE, improper_list, false)),
    %% Pids of another node are not this VM's.
    ?assertEqual(unchanged, partisan_nif:rewrite_pids(term_to_binary(self()), 'other@host', ?NODE,
                                                       improper_list, false)).

malformed() ->
    Etf = term_to_binary({self(), <<"abc">>}),
    ?assertMatch({error, <<_/binary>>},
                 partisan_nif:rewrite_pids(binary:part(Etf, 0, byte_size(Etf) - 2), node(), ?NODE,
                                           improper_list, false)),
    ?assertMatch({error, <<"compressed", _/binary>>},
                 partisan_nif:rewrite_pids(term_to_binary(lists:seq(1, 1000), [compressed]), node(),
                                           ?NODE, improper_list, false)).
