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
        %% type tests answer false, like erlang:is_pid/1
        ?assertNot(?M:is_pid(G)),
        ?assertNot(?M:is_reference(G)),
        ?assertNot(?M:is_name(G)),
        ?assertNot(?M:is_name(G, foo)),
        %% everything else fails with badarg
        ?assertError(badarg, ?M:to_pid(G)),
        ?assertError(badarg, ?M:to_name(G)),
        ?assertError(badarg, ?M:to_reference(G)),
        ?assertError(badarg, ?M:to_pid_or_name(G)),
        ?assertError(badarg, ?M:is_local_pid(G)),
        ?assertError(badarg, ?M:is_local_pid(G, self())),
        ?assertError(badarg, ?M:is_local_name(G)),
        ?assertError(badarg, ?M:is_local_name(G, foo)),
        ?assertError(badarg, ?M:is_local_reference(G)),
        ?assertError(badarg, ?M:is_local_reference(G, make_ref()))
     end || G <- Garbage],
    %% is_identical/2 takes plain pids and references too, but nothing else
    [begin
        ?assertError(badarg, ?M:is_identical(G, ?M:from_term(self()))),
        ?assertError(badarg, ?M:is_identical(?M:from_term(self()), G))
     end || G <- Garbage, not is_pid(G), not is_reference(G), not is_atom(G)].

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

%% =============================================================================
%% v5 conversions: to_pid/1, to_name/1, to_reference/1, to_pid_or_name/1
%% =============================================================================

%% A ref in each format plus the padded URI, for one term and node.
formats_of(Term, Node) ->
    [with_format(F, fun() -> ?M:from_term(Term, Node) end) || F <- ?FORMATS]
    ++ [with_env([{remote_ref_format, uri}, {remote_ref_uri_padding, true}],
                 fun() -> ?M:from_term(Term, Node) end)].

conversions_test() ->
    Pid = self(),
    Ref = make_ref(),
    [begin
        ?assertEqual(Pid, ?M:to_pid(RR)),
        ?assertEqual(Pid, ?M:to_pid_or_name(RR)),
        ?assertError(badarg, ?M:to_name(RR)),
        ?assertError(badarg, ?M:to_reference(RR))
     end || RR <- formats_of(Pid, node())],
    [begin
        ?assertEqual(Ref, ?M:to_reference(RR)),
        ?assertError(badarg, ?M:to_pid(RR)),
        ?assertError(badarg, ?M:to_name(RR)),
        ?assertError(badarg, ?M:to_pid_or_name(RR))
     end || RR <- formats_of(Ref, node())],
    [begin
        ?assertEqual(myname, ?M:to_name(RR)),
        ?assertEqual(myname, ?M:to_pid_or_name(RR)),
        ?assertError(badarg, ?M:to_pid(RR)),
        ?assertError(badarg, ?M:to_reference(RR))
     end || RR <- formats_of(myname, node())].

conversions_remote_test() ->
    [begin
        ?assertError(badarg, ?M:to_pid(RR)),
        ?assertError(badarg, ?M:to_name(RR)),
        ?assertError(badarg, ?M:to_reference(RR)),
        ?assertError(badarg, ?M:to_pid_or_name(RR))
     end || T <- [self(), make_ref(), myname], RR <- formats_of(T, ?OTHER)].

to_name_never_creates_atoms_test() ->
    S = fresh_name(),
    B = list_to_binary(S),
    NB = nodebin(),
    Refs = [[node() | <<"Name#", B/binary>>],
            {partisan_remote_reference, node(), {partisan_registered_name_reference, S}},
            <<"partisan:name:", NB/binary, ":", B/binary>>,
            <<"partisan:name:", NB/binary, ":", B/binary, 0, 0, 0>>],
    [begin
        ?assertError(badarg, ?M:to_name(RR)),
        ?assertError(badarg, ?M:to_pid_or_name(RR)),
        ?assert(?M:is_local_name(RR)),
        ?assertNot(?M:is_local_name(RR, myname)),
        ?assertNot(?M:is_local_pid(RR, self())),
        ?assertNot(?M:is_identical(RR, self())),
        ?assertNot(?M:is_identical(RR, myname))
     end || RR <- Refs],
    ?assertError(badarg, list_to_existing_atom(S)).

%% =============================================================================
%% is_identical/2
%% =============================================================================

is_identical_across_formats_test() ->
    [begin
        Refs = formats_of(T, Node),
        [?assert(?M:is_identical(A, B)) || A <- Refs, B <- Refs]
     end || T <- [self(), make_ref(), myname], Node <- [node(), ?OTHER]].

is_identical_plain_terms_test() ->
    Pid = self(),
    Ref = make_ref(),
    [begin
        Refs = formats_of(T, node()),
        [begin
            ?assert(?M:is_identical(RR, T)),
            ?assert(?M:is_identical(T, RR))
         end || RR <- Refs]
     end || T <- [Pid, Ref, myname]],
    ?assert(?M:is_identical(Pid, Pid)),
    ?assert(?M:is_identical(myname, myname)),
    %% the same target on another node is not identical
    [?assertNot(?M:is_identical(RR, T))
        || T <- [Pid, Ref, myname], RR <- formats_of(T, ?OTHER)].

is_identical_different_targets_test() ->
    Other = spawn(fun() -> ok end),
    Pid = self(),
    [?assertNot(?M:is_identical(A, B))
        || A <- formats_of(Pid, node()), B <- formats_of(Other, node())],
    [?assertNot(?M:is_identical(A, B))
        || A <- formats_of(make_ref(), node()), B <- formats_of(make_ref(), node())],
    [?assertNot(?M:is_identical(A, B))
        || A <- formats_of(Pid, node()), B <- formats_of(make_ref(), node())],
    ?assertNot(?M:is_identical(Pid, Other)),
    ?assertNot(?M:is_identical(name_a, name_b)).

is_identical_pid_and_registered_name_test() ->
    Name = partisan_rr_test_registered,
    true = register(Name, self()),
    try
        [begin
            ?assert(?M:is_identical(P, N)),
            ?assert(?M:is_identical(N, P))
         end || P <- [self() | formats_of(self(), node())],
                N <- [Name | formats_of(Name, node())]],
        %% another process is not identical to the name
        Other = spawn(fun() -> ok end),
        [?assertNot(?M:is_identical(P, N))
            || P <- formats_of(Other, node()), N <- formats_of(Name, node())],
        %% a name on another node is never resolved here
        [?assertNot(?M:is_identical(P, N))
            || P <- formats_of(self(), node()), N <- formats_of(Name, ?OTHER)]
    after
        unregister(Name)
    end,
    %% unregistered: no longer identical
    [?assertNot(?M:is_identical(P, N))
        || P <- formats_of(self(), node()), N <- formats_of(Name, node())].

is_identical_remote_pid_test() ->
    %% An external pid <X.123.0> of other@host is identical to its refs.
    Pid = binary_to_term(
        <<131, 88, 100, 10:16, "other@host", 123:32, 0:32, 1:32>>),
    [begin
        ?assert(?M:is_identical(Pid, RR)),
        ?assert(?M:is_identical(RR, Pid))
     end || F <- ?FORMATS, RR <- [with_format(F, fun() -> ?M:from_term(Pid) end)]],
    ?assertNot(?M:is_identical(Pid, ?M:from_term(self()))).

is_identical_padding_test() ->
    Uri = with_format(uri, fun() -> ?M:from_term(self()) end),
    Padded = <<Uri/binary, 0, 0, " ", 0>>,
    ?assert(?M:is_identical(Uri, Padded)),
    ?assert(?M:is_identical(Padded, self())),
    ?assert(?M:is_identical(Padded,
                            with_format(tuple, fun() -> ?M:from_term(self()) end))).

%% =============================================================================
%% is_local_pid/1,2, is_local_name/1,2, is_local_reference/1,2
%% =============================================================================

is_local_kind_test() ->
    Pid = self(),
    Ref = make_ref(),
    [begin
        ?assert(?M:is_local_pid(RR)),
        ?assertNot(?M:is_local_name(RR)),
        ?assertNot(?M:is_local_reference(RR))
     end || RR <- formats_of(Pid, node())],
    [begin
        ?assertNot(?M:is_local_pid(RR)),
        ?assertNot(?M:is_local_name(RR)),
        ?assert(?M:is_local_reference(RR))
     end || RR <- formats_of(Ref, node())],
    [begin
        ?assertNot(?M:is_local_pid(RR)),
        ?assert(?M:is_local_name(RR)),
        ?assertNot(?M:is_local_reference(RR))
     end || RR <- formats_of(myname, node())],
    %% nothing of another node is local
    [begin
        ?assertNot(?M:is_local_pid(RR)),
        ?assertNot(?M:is_local_name(RR)),
        ?assertNot(?M:is_local_reference(RR))
     end || T <- [Pid, Ref, myname], RR <- formats_of(T, ?OTHER)].

is_local_pid_2_test() ->
    Pid = self(),
    Other = spawn(fun() -> ok end),
    [begin
        ?assert(?M:is_local_pid(RR, Pid)),
        ?assertNot(?M:is_local_pid(RR, Other))
     end || RR <- formats_of(Pid, node())],
    [?assertNot(?M:is_local_pid(RR, Pid)) || RR <- formats_of(Pid, ?OTHER)],
    [?assertNot(?M:is_local_pid(RR, Pid)) || RR <- formats_of(make_ref(), node())],
    %% a local name registered to the pid denotes it (as in Partisan)
    Name = partisan_rr_test_is_local_pid,
    [?assertNot(?M:is_local_pid(RR, Pid)) || RR <- formats_of(Name, node())],
    true = register(Name, Pid),
    try
        [?assert(?M:is_local_pid(RR, Pid)) || RR <- formats_of(Name, node())],
        [?assertNot(?M:is_local_pid(RR, Other)) || RR <- formats_of(Name, node())],
        [?assertNot(?M:is_local_pid(RR, Pid)) || RR <- formats_of(Name, ?OTHER)]
    after
        unregister(Name)
    end,
    RR0 = ?M:from_term(Pid),
    ?assertError(badarg, ?M:is_local_pid(RR0, not_a_pid)),
    ?assertError(badarg, ?M:is_local_pid(RR0, make_ref())),
    ?assertError(badarg, ?M:is_local_pid(Pid, Pid)).

is_local_pid_remote_pid_test() ->
    Pid = binary_to_term(
        <<131, 88, 100, 10:16, "other@host", 123:32, 0:32, 1:32>>),
    Local = list_to_pid("<0.123.0>"),
    RR = ?M:from_term(Pid),
    ?assertNot(?M:is_local_pid(RR)),
    ?assertNot(?M:is_local_pid(RR, Pid)),
    ?assertNot(?M:is_local_pid(RR, Local)),
    %% a local ref with the same numbers does not denote the external pid
    ?assertNot(?M:is_local_pid(?M:from_term(Local), Pid)).

is_local_name_2_test() ->
    [begin
        ?assert(?M:is_local_name(RR, myname)),
        ?assertNot(?M:is_local_name(RR, othername))
     end || RR <- formats_of(myname, node())],
    [?assertNot(?M:is_local_name(RR, myname)) || RR <- formats_of(myname, ?OTHER)],
    [?assertNot(?M:is_local_name(RR, myname)) || RR <- formats_of(self(), node())],
    ?assertError(badarg, ?M:is_local_name(?M:from_term(myname), "myname")),
    ?assertError(badarg, ?M:is_local_name(myname, myname)).

is_local_reference_2_test() ->
    Ref = make_ref(),
    Other = make_ref(),
    [begin
        ?assert(?M:is_local_reference(RR, Ref)),
        ?assertNot(?M:is_local_reference(RR, Other))
     end || RR <- formats_of(Ref, node())],
    [?assertNot(?M:is_local_reference(RR, Ref)) || RR <- formats_of(Ref, ?OTHER)],
    [?assertNot(?M:is_local_reference(RR, Ref)) || RR <- formats_of(self(), node())],
    ?assertError(badarg, ?M:is_local_reference(?M:from_term(Ref), self())),
    ?assertError(badarg, ?M:is_local_reference(Ref, Ref)).

local_under_configured_name_test() ->
    %% With a partisan name that differs from node(), local means that name.
    with_env([{name, 'partisan@example'}], fun() ->
        Pid = self(),
        RR = ?M:from_term(Pid),
        ?assert(?M:is_local_pid(RR)),
        ?assert(?M:is_local_pid(RR, Pid)),
        ?assertEqual(Pid, ?M:to_pid(RR)),
        ?assert(?M:is_identical(RR, Pid)),
        ?assertNot(?M:is_local_pid(?M:from_term(Pid, node())))
    end).

%% =============================================================================
%% partisan: self/0,1, is_self/1, make_ref/0, is_local_*/1,2, is_pid/1, ...
%% =============================================================================

partisan_self_test_() ->
    [{atom_to_list(F), fun() -> with_format(F, fun partisan_self/0) end}
        || F <- ?FORMATS].

partisan_self() ->
    RR = partisan:self(),
    ?assert(?M:is_type(RR)),
    ?assertEqual(RR, partisan:self([])),
    ?assertEqual(self(), ?M:to_pid(RR)),
    ?assert(partisan:is_self(RR)),
    ?assert(partisan:is_self(self())),
    ?assert(partisan:is_pid(RR)),
    ?assertNot(partisan:is_reference(RR)),
    ?assert(partisan:is_local(RR)),
    ?assert(partisan:is_local_pid(RR)),
    ?assert(partisan:is_local_pid(RR, self())),
    Other = spawn(fun() -> ok end),
    ?assertNot(partisan:is_self(Other)),
    ?assertNot(partisan:is_self(?M:from_term(Other))),
    ?assertNot(partisan:is_self(?M:from_term(self(), ?OTHER))),
    ?assertError(badarg, partisan:is_self(not_a_ref)),
    ?assertError(badarg, partisan:self([bogus])).

partisan_self_cache_test() ->
    erase({partisan, self}),
    RR = partisan:self([cache]),
    ?assertEqual(RR, partisan:self()),
    ?assertEqual({self(), RR}, get({partisan, self})),
    ?assertEqual(RR, partisan:self([cache])),
    %% a dictionary inherited from another process is not trusted
    Other = spawn(fun() -> ok end),
    put({partisan, self}, {Other, ?M:from_term(Other)}),
    ?assertEqual(RR, partisan:self([cache])),
    ?assertEqual({self(), RR}, get({partisan, self})),
    erase({partisan, self}).

partisan_is_self_registered_name_test() ->
    Name = partisan_rr_test_is_self,
    true = register(Name, self()),
    try
        [?assert(partisan:is_self(RR)) || RR <- formats_of(Name, node())]
    after
        unregister(Name)
    end.

partisan_make_ref_test_() ->
    [{atom_to_list(F), fun() -> with_format(F, fun partisan_make_ref/0) end}
        || F <- ?FORMATS].

partisan_make_ref() ->
    RR = partisan:make_ref(),
    ?assert(?M:is_type(RR)),
    ?assert(?M:is_reference(RR)),
    ?assert(partisan:is_reference(RR)),
    ?assertNot(partisan:is_pid(RR)),
    ?assert(partisan:is_local(RR)),
    ?assert(partisan:is_local_reference(RR)),
    ?assert(is_reference(?M:to_reference(RR))),
    ?assert(partisan:is_local_reference(RR, ?M:to_reference(RR))),
    ?assertNotEqual(RR, partisan:make_ref()).

partisan_is_local_plain_terms_test() ->
    Pid = self(),
    Ref = make_ref(),
    ExtPid = binary_to_term(
        <<131, 88, 100, 10:16, "other@host", 123:32, 0:32, 1:32>>),
    ?assert(partisan:is_local_pid(Pid)),
    ?assertNot(partisan:is_local_pid(ExtPid)),
    ?assert(partisan:is_local_pid(Pid, Pid)),
    ?assertNot(partisan:is_local_pid(Pid, spawn(fun() -> ok end))),
    ?assertError(badarg, partisan:is_local_pid(Pid, notapid)),
    ?assertError(badarg, partisan:is_local_pid(notaref)),
    ?assert(partisan:is_local_name(anyname)),
    ?assert(partisan:is_local_name(anyname, anyname)),
    ?assertNot(partisan:is_local_name(anyname, other)),
    ?assertError(badarg, partisan:is_local_name(anyname, "anyname")),
    ?assert(partisan:is_local_reference(Ref)),
    ?assert(partisan:is_local_reference(Ref, Ref)),
    ?assertNot(partisan:is_local_reference(Ref, make_ref())),
    ?assertError(badarg, partisan:is_local_reference(Ref, Pid)),
    ?assertError(badarg, partisan:is_local_reference(Pid)),
    [begin
        ?assert(partisan:is_local_name(RR)),
        ?assert(partisan:is_local_name(RR, myname)),
        ?assertNot(partisan:is_local_pid(RR))
     end || RR <- formats_of(myname, node())],
    [begin
        ?assertNot(partisan:is_local_name(RR)),
        ?assertNot(partisan:is_local_name(RR, myname))
     end || RR <- formats_of(myname, ?OTHER)],
    [?assert(partisan:is_local_reference(RR, Ref)) || RR <- formats_of(Ref, node())],
    [?assertNot(partisan:is_local_reference(RR)) || RR <- formats_of(Ref, ?OTHER)].

partisan_type_tests_test() ->
    [?assert(partisan:is_pid(RR)) || RR <- formats_of(self(), ?OTHER)],
    [?assert(partisan:is_reference(RR)) || RR <- formats_of(make_ref(), ?OTHER)],
    [?assertNot(partisan:is_pid(RR)) || RR <- formats_of(myname, node())],
    ?assert(partisan:is_pid(self())),
    ?assert(partisan:is_reference(make_ref())),
    ?assertNot(partisan:is_pid(foo)),
    ?assertNot(partisan:is_reference(<<"partisan:ref:">>)),
    Port = open_port({spawn, "true"}, []),
    ?assert(partisan:is_local(Port)),
    catch port_close(Port).
