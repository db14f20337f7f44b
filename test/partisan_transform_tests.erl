-module(partisan_transform_tests).

-include_lib("eunit/include/eunit.hrl").

-define(T, partisan_transform).

%% `?REWRITES(Before, After)': the body of f/2 (arguments X and Y) reads `After' once
%% transformed. `?KEEPS(Body)': it is left as it is.
-define(REWRITES(Before, After), ?assertEqual(exprs(After), body(transform(mod(Before))))).
-define(KEEPS(Body), ?REWRITES(Body, Body)).

%% =============================================================================
%% Helpers
%% =============================================================================

mod(Body) ->
    mod(Body, "").

mod(Body, Extra) ->
    "-module(t).\n-export([f/2]).\n" ++ Extra ++ "f(X, Y) ->\n    " ++ Body ++ ".\n".

%% Source text to forms; `maybe' and `else' are keywords (OTP 25's maybe_expr feature).
parse(Src) ->
    Reserved = fun(W) -> erl_scan:f_reserved_word(W) orelse W =:= 'maybe' orelse W =:= 'else' end,
    {ok, Tokens, End} = erl_scan:string(Src, {1, 1}, [{reserved_word_fun, Reserved}]),
    [{attribute, {1, 1}, file, {"t.erl", 1}}]
        ++ [begin {ok, F} = erl_parse:parse_form(Ts), F end || Ts <- split_forms(Tokens, [])]
        ++ [{eof, End}].

split_forms([], []) -> [];
split_forms([{dot, _} = Dot | Rest], Acc) -> [lists:reverse([Dot | Acc]) | split_forms(Rest, [])];
split_forms([T | Rest], Acc) -> split_forms(Rest, [T | Acc]).

transform(Src) ->
    transform(Src, []).

transform(Src, Opts) ->
    ?T:parse_transform(parse(Src), Opts).

%% The body of f/2, without annotations.
body(Forms) ->
    [Body] = [B || {function, _, f, 2, [{clause, _, _, _, B}]} <- Forms],
    strip(Body).

exprs(Src) ->
    Reserved = fun(W) -> erl_scan:f_reserved_word(W) orelse W =:= 'maybe' orelse W =:= 'else' end,
    {ok, Tokens, _} = erl_scan:string(Src ++ ".", {1, 1}, [{reserved_word_fun, Reserved}]),
    {ok, Es} = erl_parse:parse_exprs(Tokens),
    strip(Es).

strip(Tree) ->
    erl_parse:map_anno(fun(_) -> erl_anno:new(0) end, Tree).

%% compile:forms/2 with the transform; returns {ok, Warnings} or {error, Errors}.
compile(Src) ->
    compile(Src, []).

compile(Src, Opts) ->
    case compile:forms(parse(Src), [{parse_transform, ?T}, return, binary, warn_unused_import,
                                    warn_export_vars, warn_shadow_vars | Opts]) of
        {ok, _, _, Warnings} -> {ok, Warnings};
        {error, Errors, _} -> {error, Errors}
    end.

error_texts(Errors) ->
    [lists:flatten(M:format_error(E)) || {_, Es} <- Errors, {_, M, E} <- Es].

%% =============================================================================
%% The send operator and erlang:send/2,3
%% =============================================================================

bang_test() ->
    ?REWRITES("X ! Y", "partisan_transform:send(X, Y)"),
    ?REWRITES("X ! Y ! hello", "partisan_transform:send(X, partisan_transform:send(Y, hello))"),
    ?REWRITES("{ok, X ! {Y, [1]}}", "{ok, partisan_transform:send(X, {Y, [1]})}"),
    ?REWRITES("{X, Y} ! Y", "partisan_transform:send({X, Y}, Y)").

erlang_send_test() ->
    ?REWRITES("erlang:send(X, Y)", "partisan_transform:send(X, Y)"),
    ?REWRITES("erlang:send(X, Y, [noconnect])", "partisan_transform:send(X, Y, [noconnect])"),
    %% send/2 is no auto-imported BIF: a local send/2 is the module's own
    ?KEEPS("send(X, Y)").

%% =============================================================================
%% BIFs redirected to partisan
%% =============================================================================

bif_rewrites_test_() ->
    Bifs = [{self, 0}, {node, 0}, {node, 1}, {nodes, 0}, {is_process_alive, 1}, {monitor, 2},
            {monitor, 3}, {demonitor, 1}, {demonitor, 2}, {monitor_node, 2},
            {monitor_node, 3}, {exit, 2}, {spawn, 2}, {spawn, 4}, {spawn_monitor, 2},
            {spawn_monitor, 4}, {send_after, 3}, {send_after, 4}, {cancel_timer, 1},
            {cancel_timer, 2}, {process_info, 1}, {process_info, 2}, {whereis, 1},
            {is_pid, 1}, {is_reference, 1}, {make_ref, 0}],
    [{lists:flatten(io_lib:format("~p/~p", [F, A])), fun() -> bif_rewrite(F, A) end}
        || {F, A} <- Bifs].

bif_rewrite(F, A) ->
    Args = lists:join(", ", [[$A | integer_to_list(N)] || N <- lists:seq(1, A)]),
    Call = fun(Prefix) -> lists:flatten([Prefix, atom_to_list(F), "(", Args, ")"]) end,
    ?REWRITES(Call("erlang:"), Call("partisan:")),
    case erl_internal:bif(F, A) of
        true -> ?REWRITES(Call(""), Call("partisan:"));
        false -> ok
    end.

self_node_nodes_test() ->
    ?REWRITES("self()", "partisan:self()"),
    ?REWRITES("erlang:self()", "partisan:self()"),
    ?REWRITES("node()", "partisan:node()"),
    ?REWRITES("node(X)", "partisan:node(X)"),
    ?REWRITES("nodes()", "partisan:nodes()"),
    ?REWRITES("make_ref()", "partisan:make_ref()").

untouched_bifs_test() ->
    %% other arities and other BIFs stay
    ?KEEPS("exit(X)"),
    ?KEEPS("spawn(X)"),
    ?KEEPS("spawn(X, Y, [])"),
    ?KEEPS("spawn_monitor(X)"),
    ?KEEPS("nodes(visible)"),
    ?KEEPS("erlang:nodes(X)"),
    ?KEEPS("link(X)"),
    ?KEEPS("erlang:start_timer(1, X, Y)"),
    ?KEEPS("lists:map(X, Y)"),
    ?KEEPS("X:self()"),
    ?KEEPS("erlang:Y()").

%% =============================================================================
%% OTP modules
%% =============================================================================

otp_modules_test() ->
    ?REWRITES("gen_server:call({srv, X}, Y)", "partisan_gen_server:call({srv, X}, Y)"),
    ?REWRITES("gen_server:call(X, Y, 5000)", "partisan_gen_server:call(X, Y, 5000)"),
    ?REWRITES("gen_server:cast(X, Y)", "partisan_gen_server:cast(X, Y)"),
    ?REWRITES("gen_server:reply(X, Y)", "partisan_gen_server:reply(X, Y)"),
    ?REWRITES("gen_server:multi_call(X, Y)", "partisan_gen_server:multi_call(X, Y)"),
    ?REWRITES("gen_server:abcast(X, Y)", "partisan_gen_server:abcast(X, Y)"),
    ?REWRITES("gen_server:send_request(X, Y)", "partisan_gen_server:send_request(X, Y)"),
    ?REWRITES("gen_server:start_link({local, X}, Y, [], [])",
              "partisan_gen_server:start_link({local, X}, Y, [], [])"),
    ?REWRITES("gen_server:stop(X)", "partisan_gen_server:stop(X)"),
    ?REWRITES("gen_statem:call(X, Y)", "partisan_gen_statem:call(X, Y)"),
    ?REWRITES("gen_event:notify(X, Y)", "partisan_gen_event:notify(X, Y)"),
    ?REWRITES("supervisor:start_child(X, Y)", "partisan_gen_supervisor:start_child(X, Y)"),
    ?REWRITES("supervisor:which_children(X)", "partisan_gen_supervisor:which_children(X)"),
    ?REWRITES("proc_lib:spawn_link(X)", "partisan_proc_lib:spawn_link(X)"),
    ?REWRITES("proc_lib:init_ack(X)", "partisan_proc_lib:init_ack(X)"),
    ?REWRITES("sys:get_state(X)", "partisan_sys:get_state(X)"),
    ?REWRITES("rpc:call(X, m, f, [])", "partisan_rpc:call(X, m, f, [])"),
    ?REWRITES("rpc:call(X, m, f, [], Y)", "partisan_rpc:call(X, m, f, [], Y)"),
    ?REWRITES("erpc:call(X, m, f, [])", "partisan_erpc:call(X, m, f, [])"),
    ?REWRITES("erpc:multicall(X, m, f, [])", "partisan_erpc:multicall(X, m, f, [])").

otp_modules_untouched_test() ->
    %% internals OTP calls back, functions Partisan v5 does not export, other modules
    ?KEEPS("gen_server:system_continue(X, Y, [])"),
    ?KEEPS("gen_server:format_status(X, Y)"),
    ?KEEPS("gen_statem:format_log(X)"),
    ?KEEPS("supervisor:format_log(X)"),
    ?KEEPS("proc_lib:init_p(X, Y, [])"),
    ?KEEPS("sys:suspend_loop_hib(a, b, c, d, X, Y)"),
    ?KEEPS("rpc:cast(X, m, f, [])"),
    ?KEEPS("rpc:multicall(m, f, [])"),
    ?KEEPS("erpc:execute_call(X, m, f, [])"),
    ?KEEPS("gen_server:cast(X, Y, z)"),
    ?KEEPS("gen_tcp:send(X, Y)").

%% Every redirected function exists in OTP's module, and every v5 function the table maps has
%% the same name and arity in the partisan_* module.
otp_table_matches_otp_exports_test() ->
    Mods = [gen_server, gen_statem, gen_event, supervisor, proc_lib, sys, rpc, erpc],
    [begin
        Redirected = [{F, A} || {F, A} <- M:module_info(exports),
                                partisan_transform_rules:remote_call(M, F, A) =/= none],
        ?assertNotEqual([], Redirected),
        [?assertMatch({_, F}, partisan_transform_rules:remote_call(M, F, A))
            || {F, A} <- Redirected]
     end || M <- Mods],
    %% functions OTP does not export are never redirected
    ?assertEqual(none, partisan_transform_rules:remote_call(gen_server, cast, 3)),
    ?assertEqual(none, partisan_transform_rules:remote_call(rpc, cast, 4)),
    ?assertEqual(none, partisan_transform_rules:remote_call(lists, map, 2)).

imports_test() ->
    Src = mod("call(X, Y), cast(X, Y), map(X, Y)",
              "-import(gen_server, [call/2, cast/2]).\n-import(lists, [map/2]).\n"),
    ?assertEqual(exprs("partisan_gen_server:call(X, Y), partisan_gen_server:cast(X, Y), "
                       "map(X, Y)"),
                 body(transform(Src))).

local_definitions_win_test() ->
    %% a module's own node/0 (with no_auto_import) is not the BIF
    Src = mod("{node(), self(), is_pid(X)}",
              "-compile({no_auto_import, [node/0]}).\n-export([node/0]).\nnode() -> mine.\n"),
    ?assertEqual(exprs("{node(), partisan:self(), partisan:is_pid(X)}"), body(transform(Src))),
    %% no_auto_import alone: the call is to a local function (undefined: the compiler says so)
    Src2 = mod("self()", "-compile([{no_auto_import, [{self, 0}]}]).\n"),
    ?assertEqual(exprs("self()"), body(transform(Src2))),
    %% qualified calls are always the BIF
    ?assertEqual(exprs("partisan:node()"),
                 body(transform(mod("erlang:node()",
                                    "-compile({no_auto_import, [node/0]}).\n")))).

fun_references_test() ->
    ?REWRITES("fun self/0", "fun partisan:self/0"),
    ?REWRITES("fun node/1", "fun partisan:node/1"),
    ?REWRITES("fun erlang:node/0", "fun partisan:node/0"),
    ?REWRITES("fun erlang:send/2", "fun partisan_transform:send/2"),
    ?REWRITES("fun gen_server:call/2", "fun partisan_gen_server:call/2"),
    ?KEEPS("fun lists:map/2"),
    ?KEEPS("fun X:Y/2"),
    ?KEEPS("fun link/1"),
    ?assertEqual(exprs("fun f/2"), body(transform(mod("fun f/2")))).

%% =============================================================================
%% Guards stay
%% =============================================================================

guards_untouched_test() ->
    G = "when is_pid(X), node(X) =:= node(), X =/= self(), is_reference(Y)",
    ?KEEPS("case X of Z " ++ G ++ " -> Z; _ -> Y end"),
    ?KEEPS("receive Z " ++ G ++ " -> Z after 0 -> Y end"),
    ?KEEPS("if is_pid(X), node(X) =:= node() -> X; true -> Y end"),
    ?KEEPS("fun(Z) " ++ G ++ " -> Z end"),
    ?KEEPS("try X of Z " ++ G ++ " -> Z catch _:Z " ++ G ++ " -> Z end"),
    ?KEEPS("maybe {ok, Z} ?= X, Z else Z " ++ G ++ " -> Z end"),
    %% only the bodies change
    ?REWRITES("case X of Z when is_pid(Z) -> self(); _ -> node() end",
              "case X of Z when is_pid(Z) -> partisan:self(); _ -> partisan:node() end"),
    %% function clause guards
    Src = "-module(t).\n-export([f/2]).\n"
          "f(X, Y) when is_pid(X), node(X) =:= node(), X =/= self() -> {node(), Y}.\n",
    [{function, _, f, 2, [{clause, _, _, Guards, Body}]}] =
        [F || {function, _, f, 2, _} = F <- transform(Src)],
    ?assertEqual(strip(Guards),
                 strip(element(4, hd(element(5, lists:keyfind(function, 1, parse(Src))))))),
    ?assertEqual(exprs("{partisan:node(), Y}"), strip(Body)).

comprehension_filters_test() ->
    %% a guard-test filter is a guard: it stays
    ?KEEPS("[Z || Z <- X, is_pid(Z)]"),
    ?KEEPS("[Z || Z <- X, node(Z) =:= node()]"),
    ?KEEPS("<< <<Z>> || <<Z>> <= X, Z =/= self() >>"),
    %% other filters are expressions
    ?REWRITES("[Z || Z <- X, lists:member(Z, [self()])]",
              "[Z || Z <- X, lists:member(Z, [partisan:self()])]"),
    %% generators and bodies are expressions
    ?REWRITES("[Z ! self() || Z <- nodes()]",
              "[partisan_transform:send(Z, partisan:self()) || Z <- partisan:nodes()]"),
    ?REWRITES("<< <<(node(Z))/binary>> || <<Z>> <= term_to_binary(self()) >>",
              "<< <<(partisan:node(Z))/binary>> || <<Z>> <= term_to_binary(self()) >>").

%% =============================================================================
%% Nested positions
%% =============================================================================

nested_positions_test() ->
    S = "partisan:self()",
    N = "partisan:node()",
    Cases = [
        {"[self() | node()]", "[" ++ S ++ " | " ++ N ++ "]"},
        {"#{self() => node()}", "#{" ++ S ++ " => " ++ N ++ "}"},
        {"X#{k := self()}", "X#{k := " ++ S ++ "}"},
        {"<<(term_to_binary(node()))/binary, (byte_size(X)):8>>",
         "<<(term_to_binary(" ++ N ++ "))/binary, (byte_size(X)):8>>"},
        {"case self() of X -> node() end", "case " ++ S ++ " of X -> " ++ N ++ " end"},
        {"receive X -> self() after node(Y) -> node() end",
         "receive X -> " ++ S ++ " after partisan:node(Y) -> " ++ N ++ " end"},
        {"try self() of X -> node() catch _:_ -> self() after node() end",
         "try " ++ S ++ " of X -> " ++ N ++ " catch _:_ -> " ++ S ++ " after " ++ N ++ " end"},
        {"catch self()", "catch " ++ S},
        {"begin self(), node() end", "begin " ++ S ++ ", " ++ N ++ " end"},
        {"X andalso is_pid(Y) orelse not is_pid(X)",
         "X andalso partisan:is_pid(Y) orelse not partisan:is_pid(X)"},
        {"-length(nodes())", "-length(partisan:nodes())"},
        {"fun() -> fun(Z) -> Z ! self() end end",
         "fun() -> fun(Z) -> partisan_transform:send(Z, " ++ S ++ ") end end"},
        {"fun Loop(0) -> node(); Loop(Z) -> Loop(Z - 1) end",
         "fun Loop(0) -> " ++ N ++ "; Loop(Z) -> Loop(Z - 1) end"},
        {"(fun() -> self() end)()", "(fun() -> " ++ S ++ " end)()"},
        {"X = Y = self()", "X = Y = " ++ S},
        {"lists:foreach(fun(P) -> P ! X end, [self()])",
         "lists:foreach(fun(P) -> partisan_transform:send(P, X) end, [" ++ S ++ "])"},
        {"maybe {ok, Z} ?= gen_server:call(X, Y), Z ! self() else E -> node() end",
         "maybe {ok, Z} ?= partisan_gen_server:call(X, Y), "
         "partisan_transform:send(Z, " ++ S ++ ") else E -> " ++ N ++ " end"},
        {"maybe X ! Y end", "maybe partisan_transform:send(X, Y) end"},
        {"Y:f(self())", "Y:f(" ++ S ++ ")"},
        {"(element(1, X)):(element(2, X))(node())",
         "(element(1, X)):(element(2, X))(" ++ N ++ ")"}
    ],
    [?assertEqual({Before, exprs(After)}, {Before, body(transform(mod(Before)))})
        || {Before, After} <- Cases].

records_test() ->
    Extra = "-record(r, {a = self() :: term(), b, c = node()}).\n",
    Src = mod("{#r{b = self()}, X#r{b = node()}, (X#r{})#r.a, #r.b}", Extra),
    Out = transform(Src),
    ?assertEqual(exprs("{#r{b = partisan:self()}, X#r{b = partisan:node()}, "
                       "(X#r{})#r.a, #r.b}"),
                 body(Out)),
    [{attribute, _, record, {r, Fields}}] = [A || {attribute, _, record, _} = A <- Out],
    ?assertMatch([{typed_record_field,
                   {record_field, _, {atom, _, a},
                    {call, _, {remote, _, {atom, _, partisan}, {atom, _, self}}, []}}, _},
                  {record_field, _, {atom, _, b}},
                  {record_field, _, {atom, _, c},
                   {call, _, {remote, _, {atom, _, partisan}, {atom, _, node}}, []}}],
                 Fields).

records_created_in_guards_keep_defaults_test() ->
    %% `#r{}' in a guard evaluates the defaults there, where partisan:self() is illegal
    Src = "-module(t).\n-export([f/1, g/1]).\n"
          "-record(r, {a = self()}).\n-record(q, {b = node()}).\n"
          "f(X) when X =:= #r{} -> #q{};\nf(_) -> #r{}.\n"
          "g(L) -> [X || X <- L, X =:= #q{}].\n",
    Out = transform(Src),
    ?assertMatch([{attribute, _, record, {r, [{record_field, _, {atom, _, a},
                                               {call, _, {atom, _, self}, []}}]}},
                  {attribute, _, record, {q, [{record_field, _, {atom, _, b},
                                               {call, _, {atom, _, node}, []}}]}}],
                 [A || {attribute, _, record, _} = A <- Out]),
    ?assertEqual({ok, []}, compile(Src)).

%% =============================================================================
%% self() stays a pid where only a local pid is accepted
%% =============================================================================

self_stays_a_pid_test() ->
    ?KEEPS("register(srv, self())"),
    ?KEEPS("link(self())"),
    ?KEEPS("erlang:start_timer(100, self(), tick)"),
    ?KEEPS("process_flag(X, Y), erlang:group_leader(X, self())"),
    ?KEEPS("ets:give_away(X, self(), Y)"),
    ?KEEPS("gen_tcp:controlling_process(X, self())"),
    ?KEEPS("timer:send_after(100, self(), tick)"),
    ?KEEPS("pg:join(X, self())"),
    ?REWRITES("self() ! X", "partisan_transform:send(self(), X)"),
    ?REWRITES("erlang:send(self(), X)", "partisan_transform:send(self(), X)"),
    ?REWRITES("erlang:send_after(100, self(), tick)", "partisan:send_after(100, self(), tick)"),
    %% only direct arguments: a pid inside a message is a remote reference
    ?REWRITES("register(srv, element(1, {self()}))",
              "register(srv, element(1, {partisan:self()}))"),
    ?REWRITES("self() ! {self(), X}", "partisan_transform:send(self(), {partisan:self(), X})"),
    %% arguments of redirected calls and of other functions are remote references
    ?REWRITES("gen_server:call(X, self())", "partisan_gen_server:call(X, partisan:self())"),
    ?REWRITES("erlang:monitor(process, self())", "partisan:monitor(process, partisan:self())"),
    ?REWRITES("lists:member(self(), X)", "lists:member(partisan:self(), X)"),
    %% a skipped redirect is a plain BIF again: its self() argument stays
    ?assertEqual(exprs("is_process_alive(self())"),
                 body(transform(mod("is_process_alive(self())"),
                                [{partisan_transform, [{skip, [is_process_alive]}]}]))),
    ?assertEqual(exprs("self() ! partisan:self()"),
                 body(transform(mod("self() ! self()"), [{partisan_transform, [{skip, ['!']}]}]))).

%% =============================================================================
%% Opting out
%% =============================================================================

skip_attribute_test() ->
    Body = "{X ! Y, self(), node(), node(X), gen_server:call(X, Y), gen_server:cast(X, Y)}",
    Skip = fun(Items) ->
        body(transform(mod(Body, lists:flatten(
            io_lib:format("-partisan_transform([{skip, ~p}]).\n", [Items])))))
    end,
    ?assertEqual(exprs("{X ! Y, self(), node(), node(X), partisan_gen_server:call(X, Y), "
                       "partisan_gen_server:cast(X, Y)}"),
                 Skip([self, node, '!'])),
    ?assertEqual(exprs("{partisan_transform:send(X, Y), partisan:self(), partisan:node(), "
                       "node(X), partisan_gen_server:call(X, Y), "
                       "partisan_gen_server:cast(X, Y)}"),
                 Skip([{node, 1}])),
    ?assertEqual(exprs("{partisan_transform:send(X, Y), partisan:self(), partisan:node(), "
                       "partisan:node(X), gen_server:call(X, Y), gen_server:cast(X, Y)}"),
                 Skip([gen_server])),
    ?assertEqual(exprs("{partisan_transform:send(X, Y), partisan:self(), partisan:node(), "
                       "partisan:node(X), gen_server:call(X, Y), "
                       "partisan_gen_server:cast(X, Y)}"),
                 Skip([{gen_server, call, 2}])),
    ?assertEqual(exprs("{partisan_transform:send(X, Y), self(), partisan:node(), "
                       "partisan:node(X), partisan_gen_server:call(X, Y), "
                       "partisan_gen_server:cast(X, Y)}"),
                 Skip([{erlang, self, 0}])),
    %% erlang:send/2 has its own key, apart from '!'
    ?assertEqual(exprs("{partisan_transform:send(X, Y), erlang:send(X, Y)}"),
                 body(transform(mod("{X ! Y, erlang:send(X, Y)}",
                                    "-partisan_transform([{skip, [send]}]).\n")))),
    %% fun references follow the same keys
    ?assertEqual(exprs("fun self/0"),
                 body(transform(mod("fun self/0", "-partisan_transform([{skip, [self]}]).\n")))).

skip_compile_option_test() ->
    Body = "{X ! Y, self(), node()}",
    ?assertEqual(exprs("{X ! Y, partisan:self(), node()}"),
                 body(transform(mod(Body), [{partisan_transform, [{skip, ['!', node]}]}]))),
    %% attribute and option add up; several attributes too
    Extra = "-partisan_transform([{skip, [self]}]).\n-partisan_transform([]).\n",
    ?assertEqual(exprs("{X ! Y, self(), node()}"),
                 body(transform(mod(Body, Extra), [{partisan_transform, [{skip, ['!', node]}]}]))),
    %% and through compile:forms/2
    {ok, []} = compile(mod("_ = {X, Y}, self() ! node(), ok"),
                       [{partisan_transform, [{skip, [self]}]}]).

bad_options_test() ->
    {error, E1} = compile(mod("X ! Y", "-partisan_transform([{skip, [bogus, '!']}]).\n")),
    ?assertMatch([{"t.erl", [{{3, 2}, ?T, {unknown_skip, bogus}}]}], E1),
    [Text] = error_texts(E1),
    ?assertMatch({match, _}, re:run(Text, "cannot skip bogus")),
    {error, E2} = compile(mod("X ! Y", "-partisan_transform(bogus).\n")),
    ?assertMatch([{"t.erl", [{_, ?T, {bad_option, bogus}}]}], E2),
    {error, E3} = compile(mod("X ! Y"), [{partisan_transform, [{skip, self}]}]),
    ?assertMatch([{"t.erl", [{_, ?T, {bad_option, [{skip, self}]}}]}], E3),
    {error, E4} = compile(mod("X ! Y"), [{partisan_transform, [{skip, [{node, 7}]}]}]),
    ?assertMatch([{"t.erl", [{_, ?T, {unknown_skip, {node, 7}}}]}], E4),
    {error, E5} = compile(mod("X ! Y"), [{partisan_transform, [{skip, [{lists, map, 2}]}]}]),
    ?assertMatch([{"t.erl", [{_, ?T, {unknown_skip, {lists, map, 2}}}]}], E5),
    [?assertMatch([_ | _], error_texts(E)) || E <- [E2, E3, E4, E5]].

%% =============================================================================
%% Annotations, warnings, unknown forms
%% =============================================================================

annotations_kept_test() ->
    Forms = transform(mod("X ! Y,\n    self()")),
    [Body] = [B || {function, _, f, 2, [{clause, _, _, _, B}]} <- Forms],
    ?assertMatch([{call, {4, 7}, {remote, {4, 7}, {atom, {4, 7}, partisan_transform},
                                  {atom, {4, 7}, send}},
                   [{var, {4, 5}, 'X'}, {var, {4, 9}, 'Y'}]},
                  {call, {5, 5}, {remote, {5, 5}, {atom, {5, 5}, partisan},
                                  {atom, {5, 5}, self}}, []}],
                 Body).

warnings_point_at_the_original_lines_test() ->
    Src = "-module(t).\n-export([f/2]).\nf(X, Y) ->\n    Unused = self(),\n    X ! Y.\n",
    {ok, Warnings} = compile(Src),
    ?assertMatch([{"t.erl", [{{4, 5}, erl_lint, {unused_var, 'Unused'}}]}], Warnings).

stacktrace_points_at_the_original_line_test() ->
    %% (not in tail position: a tail call leaves no frame, with or without the transform)
    Src = "-module(partisan_transform_tests_st).\n-export([f/1]).\n"
          "f(X) ->\n    ok,\n    X ! hello,\n    ok.\n",
    {ok, M, Bin, _} = compile:forms(parse(Src), [{parse_transform, ?T}, return, binary]),
    {module, M} = code:load_binary(M, "partisan_transform_tests_st.erl", Bin),
    try
        ?assertError(badarg, M:f(42)),
        try M:f(42)
        catch error:badarg:St ->
            ?assertMatch([{partisan_transform, send, _, _}, {M, f, 1, Loc} | _]
                             when is_list(Loc), St),
            [_, {M, f, 1, Loc}] = lists:sublist(St, 2),
            ?assertEqual(5, proplists:get_value(line, Loc))
        end
    after
        code:purge(M),
        code:delete(M)
    end.

unknown_forms_pass_through_test() ->
    Forms = [{attribute, 1, module, t}, {weird_form, 1, x},
             {function, 2, f, 0, [{clause, 2, [], [], [{weird_expr, 2, {call, 2, {atom, 2, self}, []}},
                                                       {call, 2, {atom, 2, self}, []}]}]},
             {eof, 3}],
    ?assertEqual([{attribute, 1, module, t}, {weird_form, 1, x},
                  {function, 2, f, 0,
                   [{clause, 2, [], [], [{weird_expr, 2, {call, 2, {atom, 2, self}, []}},
                                         {call, 2, {remote, 2, {atom, 2, partisan},
                                                    {atom, 2, self}}, []}]}]},
                  {eof, 3}],
                 ?T:parse_transform(Forms, [])).

idempotent_test() ->
    Src = mod("{X ! Y, self(), gen_server:call(X, Y), fun node/0}"),
    Once = transform(Src),
    ?assertEqual(Once, ?T:parse_transform(Once, [])).

%% A gen_server written for Distributed Erlang: compiles without warnings once transformed,
%% exactly as it does without the transform. (The parse helper scans `maybe' as a keyword, as
%% `-feature(maybe_expr, enable).' makes epp do.)
compiles_without_warnings_test() ->
    Src = "-module(t).\n"
          "-behaviour(gen_server).\n"
          "-export([start_link/0, ping/1, watch/1, init/1, handle_call/3, handle_cast/2,\n"
          "         handle_info/2]).\n"
          "-record(state, {owner = self() :: pid(), peers = [] :: [node()]}).\n"
          "start_link() -> gen_server:start_link({local, t}, t, [], []).\n"
          "ping(Node) -> gen_server:call({t, Node}, {ping, node()}, 5000).\n"
          "watch(Node) -> erlang:monitor(process, {t, Node}).\n"
          "init([]) ->\n"
          "    process_flag(trap_exit, true),\n"
          "    erlang:send_after(1000, self(), tick),\n"
          "    {ok, #state{peers = nodes()}}.\n"
          "handle_call({ping, From}, {Pid, _}, State) when is_pid(Pid), node(Pid) =/= node() ->\n"
          "    Pid ! {pong, self(), From},\n"
          "    {reply, {pong, node()}, State};\n"
          "handle_call(peers, _From, State = #state{peers = Peers}) ->\n"
          "    Alive = [P || P <- Peers, lists:member(P, nodes())],\n"
          "    {reply, Alive, State};\n"
          "handle_call(ref, _From, State) ->\n"
          "    R = make_ref(),\n"
          "    maybe\n"
          "        true ?= is_reference(R),\n"
          "        {reply, R, State}\n"
          "    else\n"
          "        false -> {reply, error, State}\n"
          "    end.\n"
          "handle_cast({tell, To, Msg}, State) ->\n"
          "    _ = [P ! Msg || P <- To, is_pid(P)],\n"
          "    gen_server:cast({t, node()}, done),\n"
          "    {noreply, State};\n"
          "handle_cast(_, State) -> {noreply, State}.\n"
          "handle_info({'DOWN', Ref, process, _, _}, State) ->\n"
          "    erlang:demonitor(Ref, [flush]),\n"
          "    {noreply, State};\n"
          "handle_info(tick, State) ->\n"
          "    {noreply, State#state{peers = nodes()}};\n"
          "handle_info(_, State) -> {noreply, State}.\n",
    Opts = [return, binary, warn_unused_import, warn_export_vars, warn_shadow_vars,
            warn_obsolete_guard],
    Plain = compile:forms(parse(Src), Opts),
    ?assertMatch({ok, t, _, []}, Plain),
    Transformed = compile:forms(parse(Src), [{parse_transform, ?T} | Opts]),
    ?assertMatch({ok, t, _, []}, Transformed),
    %% and it really was rewritten
    {ok, t, Bin, []} = Transformed,
    {ok, {t, [{imports, Imports}]}} = beam_lib:chunks(Bin, [imports]),
    [?assert(lists:member(MFA, Imports))
        || MFA <- [{partisan_gen_server, start_link, 4}, {partisan_gen_server, call, 3},
                   {partisan, monitor, 2}, {partisan, send_after, 3}, {partisan, self, 0},
                   {partisan, nodes, 0}, {partisan, node, 0}, {partisan_transform, send, 2},
                   {partisan, make_ref, 0}, {partisan, is_reference, 1},
                   {partisan_gen_server, cast, 2}, {partisan, demonitor, 2}]],
    ?assertNot(lists:member({gen_server, call, 3}, Imports)).

%% =============================================================================
%% Run time: send/2,3
%% =============================================================================

send_local_test() ->
    Self = self(),
    ?assertEqual(hello, ?T:send(Self, hello)),
    ?assertEqual(hello, receive M -> M after 1000 -> timeout end),
    %% names: unregistered raises like `!'; {Name, Node} does not
    ?assertError(badarg, ?T:send(partisan_transform_tests_nobody, x)),
    ?assertEqual(x, ?T:send({partisan_transform_tests_nobody, node()}, x)),
    true = register(partisan_transform_tests_me, Self),
    try
        ?assertEqual(a, ?T:send(partisan_transform_tests_me, a)),
        ?assertEqual(b, ?T:send({partisan_transform_tests_me, node()}, b)),
        ?assertEqual(c, ?T:send(partisan_remote_ref:from_term(partisan_transform_tests_me), c)),
        ?assertEqual([a, b, c], [receive M -> M after 1000 -> timeout end || _ <- [1, 2, 3]])
    after
        unregister(partisan_transform_tests_me)
    end,
    %% remote references of this node
    ?assertEqual(d, ?T:send(partisan_remote_ref:from_term(Self), d)),
    ?assertEqual(d, receive M2 -> M2 after 1000 -> timeout end),
    %% an alias
    Alias = alias(),
    ?assertEqual(e, ?T:send(Alias, e)),
    ?assertEqual(e, receive M3 -> M3 after 1000 -> timeout end),
    unalias(Alias).

send_local_name_ref_without_atom_test() ->
    Name = "partisan_transform_tests_no_atom_" ++ integer_to_list(erlang:unique_integer([positive])),
    Ref = [node() | list_to_binary("Name#" ++ Name)],
    ?assertEqual(x, ?T:send(Ref, x)),
    ?assertError(badarg, list_to_existing_atom(Name)).

send_remote_never_raises_test() ->
    ExtPid = binary_to_term(<<131, 88, 100, 10:16, "other@host", 123:32, 0:32, 1:32>>),
    [?assertEqual(msg, ?T:send(Dest, msg))
        || Dest <- [ExtPid, {srv, 'other@host'},
                    partisan_remote_ref:from_term(ExtPid),
                    partisan_remote_ref:from_term(srv, 'other@host'),
                    partisan_remote_ref:from_term(make_ref(), 'other@host')]],
    [?assert(lists:member(?T:send(Dest, msg, Opts), [ok, noconnect, nosuspend]))
        || Dest <- [ExtPid, {srv, 'other@host'}],
           Opts <- [[], [noconnect], [nosuspend], [noconnect, nosuspend]]],
    ?assertEqual(ok, ?T:send(ExtPid, msg, [])).

send_bad_arguments_test() ->
    ?assertError(badarg, ?T:send(42, x)),
    ?assertError(badarg, ?T:send("name", x)),
    ?assertError(badarg, ?T:send({a, b, c}, x)),
    ?assertError(badarg, ?T:send(42, x, [])),
    ?assertError(badarg, ?T:send(self(), x, [bogus])),
    ?assertError(badarg, ?T:send(self(), x, noconnect)),
    ?assertEqual(ok, ?T:send(self(), x, [noconnect])),
    ?assertEqual(x, receive M -> M after 1000 -> timeout end).
