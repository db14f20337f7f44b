-module(partisan_remote_ref_tests).

-include_lib("eunit/include/eunit.hrl").

-define(M, partisan_remote_ref).
-define(OTHER, 'other@host').
-define(FORMATS, [improper_list, tuple, uri]).

%% =============================================================================
%% Helpers
%% =============================================================================

with_env(Pairs, Fun) ->
    Old = [{K, application:get_env(partisan, K)} || {K, _} <- Pairs],
    [application:set_env(partisan, K, V) || {K, V} <- Pairs],
    try
        Fun()
    after
        [restore(K, V) || {K, V} <- Old]
    end.

restore(K, undefined) -> application:unset_env(partisan, K);
restore(K, {ok, V}) -> application:set_env(partisan, K, V).

with_format(Format, Fun) ->
    with_env([{remote_ref_format, Format}], Fun).

%% One ref of each kind for each format, built with from_term/1,2.
all_refs(Node) ->
    [with_format(F, fun() -> ?M:from_term(T, Node) end)
        || F <- ?FORMATS, T <- [self(), make_ref(), some_name]].

nodebin() ->
    atom_to_binary(node(), utf8).

%% Fresh name that is guaranteed not to be an existing atom.
fresh_name() ->
    S = "partisan_rr_no_such_atom_" ++
        integer_to_list(erlang:unique_integer([positive])) ++ "_" ++
        integer_to_list(os:system_time()),
    ?assertError(badarg, list_to_existing_atom(S)),
    S.

%% =============================================================================
%% Tests
%% =============================================================================

encoding_shapes_test() ->
    Pid = self(),
    Ref = make_ref(),
    N = node(),
    PidS = pid_to_list(Pid),
    RefS = ref_to_list(Ref),
    "<" ++ PidU0 = PidS,
    PidU = list_to_binary(lists:droplast(PidU0)),
    "#Ref<" ++ RefU0 = RefS,
    RefU = list_to_binary(lists:droplast(RefU0)),
    NB = nodebin(),
    with_format(improper_list, fun() ->
        ?assertEqual([N | list_to_binary("Pid#" ++ PidS)], ?M:from_term(Pid)),
        ?assertEqual([N | list_to_binary("Ref" ++ RefS)], ?M:from_term(Ref)),
        ?assertEqual([N | <<"Name#myname">>], ?M:from_term(myname))
    end),
    with_format(tuple, fun() ->
        ?assertEqual(
            {partisan_remote_reference, N, {partisan_process_reference, PidS}},
            ?M:from_term(Pid)),
        ?assertEqual(
            {partisan_remote_reference, N, {partisan_encoded_reference, RefS}},
            ?M:from_term(Ref)),
        ?assertEqual(
            {partisan_remote_reference, N,
                {partisan_registered_name_reference, "myname"}},
            ?M:from_term(myname))
    end),
    with_format(uri, fun() ->
        ?assertEqual(<<"partisan:pid:", NB/binary, ":", PidU/binary>>,
                     ?M:from_term(Pid)),
        ?assertEqual(<<"partisan:ref:", NB/binary, ":", RefU/binary>>,
                     ?M:from_term(Ref)),
        ?assertEqual(<<"partisan:name:", NB/binary, ":myname">>,
                     ?M:from_term(myname))
    end).

round_trip_test_() ->
    [{atom_to_list(F), fun() -> with_format(F, fun round_trip/0) end}
        || F <- ?FORMATS].

round_trip() ->
    Pid = self(),
    Ref = make_ref(),
    Name = myname,
    [begin
        RR = ?M:from_term(T),
        ?assert(?M:is_type(RR)),
        ?assertEqual(T, ?M:to_term(RR)),
        ?assertEqual(T, ?M:to_term(?M:from_term(T, node())))
     end || T <- [Pid, Ref, Name]],
    ?assert(?M:is_pid(?M:from_term(Pid))),
    ?assertNot(?M:is_reference(?M:from_term(Pid))),
    ?assert(?M:is_reference(?M:from_term(Ref))),
    ?assertNot(?M:is_name(?M:from_term(Ref))),
    ?assert(?M:is_name(?M:from_term(Name))),
    ?assertNot(?M:is_pid(?M:from_term(Name))),
    ?assert(?M:is_name(?M:from_term(Name), myname)),
    ?assertNot(?M:is_name(?M:from_term(Name), other)),
    ?assertNot(?M:is_name(?M:from_term(Pid), myname)),
    ?assertEqual(Name, ?M:to_term(?M:from_term({Name, node()}))).

cross_format_decoding_test() ->
    %% Whatever produced it, every ref decodes the same under any config.
    Refs = all_refs(node()),
    [with_format(F, fun() ->
        [?assertEqual(with_format(uri, fun() -> ?M:to_term(RR) end),
                      ?M:to_term(RR)) || RR <- Refs]
     end) || F <- ?FORMATS],
    %% format/1 is the same for the same term across formats
    Pid = self(),
    Fmts = [with_format(F, fun() -> ?M:format(?M:from_term(Pid)) end)
            || F <- ?FORMATS],
    ?assertEqual(1, length(lists:usort(Fmts))),
    ?assertEqual(<<"partisan:pid:", (nodebin())/binary, ":",
                   (list_to_binary(tl(lists:droplast(pid_to_list(Pid)))))/binary>>,
                 hd(Fmts)).

node_test() ->
    [begin
        ?assertEqual(?OTHER, ?M:node(RR)),
        ?assertEqual(<<"other@host">>, ?M:nodestring(RR))
     end || RR <- all_refs(?OTHER)],
    [?assertEqual(node(), ?M:node(RR)) || RR <- all_refs(node())].

is_local_test() ->
    [begin
        ?assertNot(?M:is_local(RR)),
        ?assert(?M:is_local(RR, ?OTHER)),
        ?assertNot(?M:is_local(RR, node()))
     end || RR <- all_refs(?OTHER)],
    [begin
        ?assert(?M:is_local(RR)),
        ?assert(?M:is_local(RR, node())),
        ?assertNot(?M:is_local(RR, ?OTHER))
     end || RR <- all_refs(node())].

this_node_from_env_test() ->
    with_env([{name, 'partisan@example'}], fun() ->
        RR = ?M:from_term(self()),
        ?assertEqual('partisan@example', ?M:node(RR)),
        ?assert(?M:is_local(RR)),
        ?assertEqual(self(), ?M:to_term(RR))
    end),
    %% the same ref is no longer local once the env changes
    RR2 = with_env([{name, 'partisan@example'}], fun() ->
        ?M:from_term(self())
    end),
    ?assertNot(?M:is_local(RR2)),
    ?assertError(badarg, ?M:to_term(RR2)).

target_test() ->
    Pid = self(),
    Ref = make_ref(),
    [_, I, S] = string:tokens(tl(lists:droplast(pid_to_list(Pid))), "."),
    PidT = {pid, list_to_integer(I), list_to_integer(S)},
    RefT = {ref, list_to_binary(ref_to_list(Ref))},
    [with_format(F, fun() ->
        ?assertEqual(PidT, ?M:target(?M:from_term(Pid))),
        ?assertEqual(RefT, ?M:target(?M:from_term(Ref))),
        ?assertEqual({name, <<"myname">>}, ?M:target(?M:from_term(myname))),
        ?assertEqual(PidT, ?M:target(?M:from_term(Pid, ?OTHER)))
     end) || F <- ?FORMATS].

remote_pid_test() ->
    %% An external pid <X.123.0> of other@host (NEW_PID_EXT).
    Pid = binary_to_term(
        <<131, 88, 100, 10:16, "other@host", 123:32, 0:32, 1:32>>),
    ?assertEqual(?OTHER, node(Pid)),
    [with_format(F, fun() ->
        RR = ?M:from_term(Pid),
        ?assertEqual(?OTHER, ?M:node(RR)),
        ?assertNot(?M:is_local(RR)),
        ?assertEqual({pid, 123, 0}, ?M:target(RR)),
        ?assertEqual(<<"partisan:pid:other@host:0.123.0">>, ?M:format(RR)),
        ?assertError(badarg, ?M:to_term(RR))
     end) || F <- ?FORMATS].

to_term_non_local_test() ->
    [?assertError(badarg, ?M:to_term(RR)) || RR <- all_refs(?OTHER)].

uri_padding_test() ->
    with_env([{remote_ref_format, uri}, {remote_ref_uri_padding, true}],
        fun() ->
            RR = ?M:from_term(myname),
            ?assert(byte_size(RR) >= 65),
            ?assertEqual(myname, ?M:to_term(RR)),
            ?assertEqual({name, <<"myname">>}, ?M:target(RR)),
            ?assertEqual(self(), ?M:to_term(?M:from_term(self())))
        end),
    Uri = with_format(uri, fun() -> ?M:from_term(self()) end),
    Padded = <<Uri/binary, "   ", 0, 0, 0, " ">>,
    ?assert(?M:is_type(Padded)),
    ?assertEqual(self(), ?M:to_term(Padded)),
    ?assertEqual(Uri, ?M:format(Padded)).

ipv6_node_uri_test() ->
    Node = 'n@::1',
    [with_format(F, fun() ->
        [begin
            RR = ?M:from_term(T, Node),
            ?assertEqual(Node, ?M:node(RR)),
            ?assertEqual(<<"n@::1">>, ?M:nodestring(RR))
         end || T <- [self(), make_ref()]]
     end) || F <- ?FORMATS].

is_type_garbage_test() ->
    NB = nodebin(),
    Garbage = [
        foo, 42, "string", <<>>, <<"partisan:">>, <<"partisan:pid:">>,
        <<"partisan:pid:", NB/binary>>,
        <<"partisan:pid:", NB/binary, ":1.2">>,
        <<"partisan:pid:", NB/binary, ":0.x.0">>,
        <<"partisan:pid::0.1.0">>,
        <<"partisan:ref:", NB/binary, ":0.1">>,
        <<"partisan:name:">>,
        <<"partisan:name::myname">>,
        <<"partisan:foo:", NB/binary, ":x">>,
        <<"other:pid:", NB/binary, ":0.1.0">>,
        [node() | <<"Pid#junk">>],
        [node() | <<"Pid#<0.-1.0>">>],
        [node() | <<"Ref#<0.1.2.3>">>],
        [node() | <<"Foo#bar">>],
        [node() | "Name#foo"],
        [<<"node">> | <<"Name#foo">>],
        [node(), <<"Name#foo">>],
        {partisan_remote_reference, node(), {bad, "x"}},
        {partisan_remote_reference, node(), {partisan_process_reference, "x"}},
        {partisan_remote_reference, node(), {partisan_encoded_reference, "<0.1.2.3>"}},
        {partisan_remote_reference, node(), {partisan_registered_name_reference, foo}},
        {partisan_remote_reference, "node", {partisan_registered_name_reference, "x"}},
        {partisan_remote_reference, node()},
        self(), make_ref()
    ],
    [begin
        ?assertNot(?M:is_type(G)),
        ?assertError(badarg, ?M:node(G)),
        ?assertError(badarg, ?M:nodestring(G)),
        ?assertError(badarg, ?M:to_term(G)),
        ?assertError(badarg, ?M:target(G)),
        ?assertError(badarg, ?M:format(G)),
        ?assertError(badarg, ?M:is_local(G)),
        ?assertError(badarg, ?M:is_pid(G)),
        ?assertError(badarg, ?M:is_name(G, foo))
     end || G <- Garbage].

bad_args_test() ->
    ?assertError(badarg, ?M:from_term("notaterm")),
    ?assertError(badarg, ?M:from_term(self(), "node")),
    RR = ?M:from_term(self()),
    ?assertError(badarg, ?M:is_local(RR, "node")),
    ?assertError(badarg, ?M:is_name(RR, "name")).

non_existing_name_test() ->
    S = fresh_name(),
    B = list_to_binary(S),
    NB = nodebin(),
    Refs = [
        [node() | <<"Name#", B/binary>>],
        {partisan_remote_reference, node(),
            {partisan_registered_name_reference, S}},
        <<"partisan:name:", NB/binary, ":", B/binary>>
    ],
    [begin
        ?assert(?M:is_type(RR)),
        ?assert(?M:is_name(RR)),
        ?assert(?M:is_local(RR)),
        ?assertNot(?M:is_name(RR, myname)),
        ?assertEqual({name, B}, ?M:target(RR)),
        ?assertEqual(<<"partisan:name:", NB/binary, ":", B/binary>>,
                     ?M:format(RR)),
        ?assertError(badarg, ?M:to_term(RR))
     end || RR <- Refs],
    %% and none of the above created the atom
    ?assertError(badarg, list_to_existing_atom(S)).
