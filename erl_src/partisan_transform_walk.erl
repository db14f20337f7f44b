%% @doc The traversal of `partisan_transform': rewrites every call the rules redirect, in every
%% expression of a module (function bodies, funs, comprehensions, `case'/`receive'/`try'/`if'/
%% `maybe' clause bodies, record field defaults), over OTP 25's abstract format.
%%
%% Patterns and guards are never touched: a guard cannot call a remote function, so `self()',
%% `node(X)' and `is_pid(X)' in a guard keep their BIF meaning. A comprehension filter that is a
%% guard test (`[X || X <- L, is_pid(X)]') is evaluated by the compiler as a guard, so it is left
%% as it is too, and so are the field defaults of a record created in a guard or a filter
%% (`when X =:= #r{}' evaluates them there). Every new node takes the annotation (line and column) of the node it replaces,
%% so warnings and stack traces point at the original source. Forms and expressions it does not
%% know pass through unchanged.
%% @end
-module(partisan_transform_walk).

-export([context/2, forms/2]).

-record(ctx, {skip = [] :: [partisan_transform_rules:skip()],
              defined = #{} :: #{{atom(), arity()} => true},
              imports = #{} :: #{{atom(), arity()} => module()},
              no_auto = #{} :: #{{atom(), arity()} => true},
              records = [] :: [erl_parse:abstract_form()],
              guard_records = #{} :: #{atom() => true}}).

-opaque ctx() :: #ctx{}.
-export_type([ctx/0]).

-type form() :: erl_parse:abstract_form() | erl_parse:form_info().
-type expr() :: erl_parse:abstract_expr() | term().

%% @doc The walking context of a module: its own functions, imports and `no_auto_import'
%% settings (they decide what a local call such as `node()' refers to), its record definitions
%% and the skip list (`partisan_transform_rules:skip_key/1').
-spec context([form()], [partisan_transform_rules:skip()]) -> ctx().
context(Forms, Skip) ->
    Ctx = lists:foldl(fun learn/2, #ctx{skip = Skip}, Forms),
    Ctx#ctx{guard_records = guard_records(Forms, #{})}.

%% @doc Rewrites `Forms' (a whole module).
-spec forms([form()], ctx()) -> [form()].
forms(Forms, Ctx) ->
    [form(F, Ctx) || F <- Forms].

%% -- module facts -----------------------------------------------------------

learn({function, _, Name, Arity, _}, #ctx{defined = D} = Ctx) ->
    Ctx#ctx{defined = D#{{Name, Arity} => true}};
learn({attribute, _, import, {Mod, Fs}}, #ctx{imports = I} = Ctx) when is_list(Fs) ->
    Ctx#ctx{imports = maps:merge(I, maps:from_list([{FA, Mod} || FA <- Fs]))};
learn({attribute, _, compile, Opts}, Ctx) ->
    no_auto_import(Opts, Ctx);
learn({attribute, _, record, _} = R, #ctx{records = Rs} = Ctx) ->
    Ctx#ctx{records = [R | Rs]};
learn(_, Ctx) ->
    Ctx.

%% Records created in a guard (`when X =:= #r{}') or a comprehension filter: their field
%% defaults are evaluated there, where only guard BIFs may be called, so they stay.
guard_records({clause, _, Patterns, Guards, Body}, Acc) ->
    guard_records([Patterns, Body], created_records(Guards, Acc));
guard_records({Kind, _, E, Qs}, Acc) when Kind =:= lc; Kind =:= bc ->
    Filters = [Q || Q <- Qs, element(1, Q) =/= generate, element(1, Q) =/= b_generate],
    guard_records([E, Qs], created_records(Filters, Acc));
guard_records(T, Acc) when is_tuple(T) ->
    guard_records(tuple_to_list(T), Acc);
guard_records(L, Acc) when is_list(L) ->
    lists:foldl(fun guard_records/2, Acc, L);
guard_records(_, Acc) ->
    Acc.

created_records({record, _, Name, Fields}, Acc) when is_atom(Name) ->
    created_records(Fields, Acc#{Name => true});
created_records(T, Acc) when is_tuple(T) ->
    created_records(tuple_to_list(T), Acc);
created_records(L, Acc) when is_list(L) ->
    lists:foldl(fun created_records/2, Acc, L);
created_records(_, Acc) ->
    Acc.

no_auto_import(Opts, #ctx{no_auto = N} = Ctx) ->
    Fs = lists:append([to_list(L) || {no_auto_import, L} <- to_list(Opts)]),
    Ctx#ctx{no_auto = maps:merge(N, maps:from_list([{FA, true} || {_, _} = FA <- Fs]))}.

to_list(L) when is_list(L) -> L;
to_list(X) -> [X].

%% What a local call `F(...)' of arity `A' refers to.
resolve(F, A, #ctx{defined = D, imports = I, no_auto = N}) ->
    case D of
        #{{F, A} := _} -> local;
        #{} ->
            case I of
                #{{F, A} := Mod} -> {Mod, F, A};
                #{} ->
                    case erl_internal:bif(F, A) andalso not is_map_key({F, A}, N) of
                        true -> {erlang, F, A};
                        false -> local
                    end
            end
    end.

%% Where a call of `Callee' goes, unless a skip key disables it.
target(Callee, #ctx{skip = Skip}) ->
    case lists:any(fun(K) -> lists:member(K, Skip) end,
                   partisan_transform_rules:skip_key(Callee)) of
        true -> none;
        false ->
            {M, F, A} = Callee,
            partisan_transform_rules:remote_call(M, F, A)
    end.

%% -- forms ------------------------------------------------------------------

form({function, Anno, Name, Arity, Clauses}, Ctx) ->
    {function, Anno, Name, Arity, clauses(Clauses, Ctx)};
form({attribute, Anno, record, {Name, Fields}}, #ctx{guard_records = G} = Ctx)
  when not is_map_key(Name, G) ->
    {attribute, Anno, record, {Name, [record_def_field(F, Ctx) || F <- Fields]}};
form(Form, _) ->
    Form.

%% Field defaults are evaluated where a record is created, in the function that creates it
%% (records created in a guard keep theirs, see guard_records/2).
record_def_field({record_field, Anno, Name, Default}, Ctx) ->
    {record_field, Anno, Name, expr(Default, Ctx)};
record_def_field({typed_record_field, Field, Type}, Ctx) ->
    {typed_record_field, record_def_field(Field, Ctx), Type};
record_def_field(Field, _) ->
    Field.

%% Patterns and guards stay; only the body is rewritten.
clauses(Clauses, Ctx) ->
    [clause(C, Ctx) || C <- Clauses].

clause({clause, Anno, Patterns, Guards, Body}, Ctx) ->
    {clause, Anno, Patterns, Guards, exprs(Body, Ctx)};
clause(Other, _) ->
    Other.

exprs(Es, Ctx) ->
    [expr(E, Ctx) || E <- Es].

%% -- expressions ------------------------------------------------------------

-spec expr(expr(), ctx()) -> expr().
%% Dest ! Msg
expr({op, Anno, '!', Dest, Msg}, Ctx) ->
    Rewritten = not lists:member('!', Ctx#ctx.skip),
    Dest1 = arg(Dest, '!', 1, Rewritten, Ctx),
    Msg1 = expr(Msg, Ctx),
    case Rewritten of
        true ->
            {M, F} = partisan_transform_rules:op_send(),
            {call, Anno, {remote, Anno, {atom, Anno, M}, {atom, Anno, F}}, [Dest1, Msg1]};
        false ->
            {op, Anno, '!', Dest1, Msg1}
    end;
%% M:F(Args) with literal module and function
expr({call, Anno, {remote, _, {atom, _, M}, {atom, _, F}} = Fun, Args}, Ctx) ->
    known_call(Anno, {M, F, length(Args)}, Fun, Args, Ctx);
%% M:F(Args) with computed module or function
expr({call, Anno, {remote, RAnno, M, F}, Args}, Ctx) ->
    {call, Anno, {remote, RAnno, expr(M, Ctx), expr(F, Ctx)}, exprs(Args, Ctx)};
%% F(Args): a local function, an import or an auto-imported BIF
expr({call, Anno, {atom, _, F} = Fun, Args}, Ctx) ->
    case resolve(F, length(Args), Ctx) of
        local -> {call, Anno, Fun, exprs(Args, Ctx)};
        Callee -> known_call(Anno, Callee, Fun, Args, Ctx)
    end;
expr({call, Anno, Fun, Args}, Ctx) ->
    {call, Anno, expr(Fun, Ctx), exprs(Args, Ctx)};
%% fun F/A and fun M:F/A
expr({'fun', Anno, {function, F, A}} = E, Ctx) when is_atom(F), is_integer(A) ->
    case resolve(F, A, Ctx) of
        local -> E;
        Callee -> fun_ref(Anno, Callee, E, Ctx)
    end;
expr({'fun', Anno, {function, {atom, _, M}, {atom, _, F}, {integer, _, A}}} = E, Ctx) ->
    fun_ref(Anno, {M, F, A}, E, Ctx);
expr({'fun', Anno, {function, M, F, A}}, Ctx) ->
    {'fun', Anno, {function, expr(M, Ctx), expr(F, Ctx), expr(A, Ctx)}};
expr({'fun', Anno, {clauses, Cs}}, Ctx) ->
    {'fun', Anno, {clauses, clauses(Cs, Ctx)}};
expr({named_fun, Anno, Name, Cs}, Ctx) ->
    {named_fun, Anno, Name, clauses(Cs, Ctx)};
%% operators (andalso/orelse included)
expr({op, Anno, Op, L, R}, Ctx) ->
    {op, Anno, Op, expr(L, Ctx), expr(R, Ctx)};
expr({op, Anno, Op, E}, Ctx) ->
    {op, Anno, Op, expr(E, Ctx)};
%% matches: the pattern stays
expr({match, Anno, P, E}, Ctx) ->
    {match, Anno, P, expr(E, Ctx)};
expr({maybe_match, Anno, P, E}, Ctx) ->
    {maybe_match, Anno, P, expr(E, Ctx)};
%% control flow
expr({block, Anno, Es}, Ctx) ->
    {block, Anno, exprs(Es, Ctx)};
expr({'catch', Anno, E}, Ctx) ->
    {'catch', Anno, expr(E, Ctx)};
expr({'case', Anno, E, Cs}, Ctx) ->
    {'case', Anno, expr(E, Ctx), clauses(Cs, Ctx)};
expr({'if', Anno, Cs}, Ctx) ->
    {'if', Anno, clauses(Cs, Ctx)};
expr({'receive', Anno, Cs}, Ctx) ->
    {'receive', Anno, clauses(Cs, Ctx)};
expr({'receive', Anno, Cs, Timeout, After}, Ctx) ->
    {'receive', Anno, clauses(Cs, Ctx), expr(Timeout, Ctx), exprs(After, Ctx)};
expr({'try', Anno, Body, Cs, CatchCs, After}, Ctx) ->
    {'try', Anno, exprs(Body, Ctx), clauses(Cs, Ctx), clauses(CatchCs, Ctx),
        exprs(After, Ctx)};
expr({'maybe', Anno, Body}, Ctx) ->
    {'maybe', Anno, exprs(Body, Ctx)};
expr({'maybe', Anno, Body, {'else', EAnno, Cs}}, Ctx) ->
    {'maybe', Anno, exprs(Body, Ctx), {'else', EAnno, clauses(Cs, Ctx)}};
%% comprehensions
expr({lc, Anno, E, Qs}, Ctx) ->
    {lc, Anno, expr(E, Ctx), qualifiers(Qs, Ctx)};
expr({bc, Anno, E, Qs}, Ctx) ->
    {bc, Anno, expr(E, Ctx), qualifiers(Qs, Ctx)};
%% data
expr({tuple, Anno, Es}, Ctx) ->
    {tuple, Anno, exprs(Es, Ctx)};
expr({cons, Anno, H, T}, Ctx) ->
    {cons, Anno, expr(H, Ctx), expr(T, Ctx)};
expr({map, Anno, Assocs}, Ctx) ->
    {map, Anno, assocs(Assocs, Ctx)};
expr({map, Anno, E, Assocs}, Ctx) ->
    {map, Anno, expr(E, Ctx), assocs(Assocs, Ctx)};
expr({bin, Anno, Elements}, Ctx) ->
    {bin, Anno, [bin_element(B, Ctx) || B <- Elements]};
expr({record, Anno, Name, Fields}, Ctx) ->
    {record, Anno, Name, record_fields(Fields, Ctx)};
expr({record, Anno, E, Name, Fields}, Ctx) ->
    {record, Anno, expr(E, Ctx), Name, record_fields(Fields, Ctx)};
expr({record_field, Anno, E, Name, Field}, Ctx) ->
    {record_field, Anno, expr(E, Ctx), Name, Field};
%% atomic values, variables, record_index and anything unknown
expr(E, _) ->
    E.

%% A call of a known function: redirected when the rules say so; `self()' arguments stay pids
%% where only a local pid is accepted.
known_call(Anno, Callee, Fun, Args, Ctx) ->
    Target = target(Callee, Ctx),
    Args1 = args(Args, Callee, Target =/= none, Ctx),
    case Target of
        none -> {call, Anno, Fun, Args1};
        {M, F} -> {call, Anno, remote(Fun, M, F), Args1}
    end.

remote({remote, RAnno, {atom, MAnno, _}, {atom, FAnno, _}}, M, F) ->
    {remote, RAnno, {atom, MAnno, M}, {atom, FAnno, F}};
remote({atom, FAnno, _}, M, F) ->
    {remote, FAnno, {atom, FAnno, M}, {atom, FAnno, F}}.

fun_ref(Anno, {_, _, A} = Callee, E, Ctx) ->
    case target(Callee, Ctx) of
        none -> E;
        {M, F} -> {'fun', Anno, {function, {atom, Anno, M}, {atom, Anno, F}, {integer, Anno, A}}}
    end.

args(Args, Callee, Rewritten, Ctx) ->
    [arg(E, Callee, N, Rewritten, Ctx) || {N, E} <- lists:enumerate(Args)].

arg(E, Callee, N, Rewritten, Ctx) ->
    case is_self_call(E, Ctx) andalso partisan_transform_rules:keeps_pid(Callee, N, Rewritten) of
        true -> E;
        false -> expr(E, Ctx)
    end.

is_self_call({call, _, {remote, _, {atom, _, erlang}, {atom, _, self}}, []}, _) -> true;
is_self_call({call, _, {atom, _, self}, []}, Ctx) -> resolve(self, 0, Ctx) =:= {erlang, self, 0};
is_self_call(_, _) -> false.

qualifiers(Qs, Ctx) ->
    [qualifier(Q, Ctx) || Q <- Qs].

qualifier({generate, Anno, P, E}, Ctx) ->
    {generate, Anno, P, expr(E, Ctx)};
qualifier({b_generate, Anno, P, E}, Ctx) ->
    {b_generate, Anno, P, expr(E, Ctx)};
qualifier(Filter, Ctx) ->
    case is_guard_filter(Filter, Ctx) of
        true -> Filter;
        false -> expr(Filter, Ctx)
    end.

%% The compiler evaluates a filter that is a guard test as a guard (an exception is `false');
%% rewriting it would change that, so it stays.
is_guard_filter(Filter, #ctx{records = Rs} = Ctx) ->
    Overridden = fun({F, A}) -> resolve(F, A, Ctx) =/= {erlang, F, A} end,
    try erl_lint:is_guard_test(Filter, Rs, Overridden)
    catch _:_ -> false
    end.

assocs(Assocs, Ctx) ->
    [assoc(A, Ctx) || A <- Assocs].

assoc({Kind, Anno, K, V}, Ctx) when Kind =:= map_field_assoc; Kind =:= map_field_exact ->
    {Kind, Anno, expr(K, Ctx), expr(V, Ctx)};
assoc(Other, _) ->
    Other.

bin_element({bin_element, Anno, V, Size, Type}, Ctx) ->
    {bin_element, Anno, expr(V, Ctx), size_expr(Size, Ctx), Type};
bin_element(Other, _) ->
    Other.

size_expr(default, _) -> default;
size_expr(Size, Ctx) -> expr(Size, Ctx).

record_fields(Fields, Ctx) ->
    [record_field(F, Ctx) || F <- Fields].

record_field({record_field, Anno, Name, E}, Ctx) ->
    {record_field, Anno, Name, expr(E, Ctx)};
record_field(Other, _) ->
    Other.
