%% @doc Partisan remote references: pids, references and registered names
%% tagged with the node they live on, so they can travel between nodes
%% without disterl.
%%
%% Three encodings exist; `from_term/1,2' produces the one selected by the
%% `partisan' application env key `remote_ref_format' (default
%% `improper_list'), while every decoding function accepts all three:
%%
%% <ul>
%% <li>`improper_list': `[Node | <<"Pid#<0.123.0>">>]',
%%     `[Node | <<"Ref#Ref<0.1.2.3>">>]' (tag `Ref' followed by
%%     `erlang:ref_to_list/1' output), `[Node | <<"Name#myname">>]'.</li>
%% <li>`tuple': `{partisan_remote_reference, Node, Target}' where `Target' is
%%     `{partisan_process_reference, "<0.123.0>"}',
%%     `{partisan_encoded_reference, "#Ref<0.1.2.3>"}' or
%%     `{partisan_registered_name_reference, "myname"}'.</li>
%% <li>`uri': `<<"partisan:pid:node@host:0.123.0">>',
%%     `<<"partisan:ref:node@host:0.1.2.3">>',
%%     `<<"partisan:name:node@host:myname">>'. When env
%%     `remote_ref_uri_padding' is `true' URIs shorter than 65 bytes are
%%     padded with NUL bytes (forcing off-heap binaries); trailing spaces and
%%     NUL bytes are stripped when decoding.</li>
%% </ul>
%%
%% Pid and reference texts are always stored with a `0' node component, the
%% node being carried separately. Decoding never creates atoms for process
%% names (only {@link node/1} creates the node atom).
%%
%% Errors: the type tests {@link is_type/1}, {@link is_pid/1},
%% {@link is_reference/1} and {@link is_name/1} answer `false' for any term
%% that is not a well-formed reference of their kind (like `erlang:is_pid/1');
%% every other function fails with `badarg' on malformed input.
%% @end
-module(partisan_remote_ref).

-compile({no_auto_import, [is_pid/1, is_reference/1, node/1]}).
-dialyzer(no_improper_lists).

-export([from_term/1, from_term/2, to_term/1]).
-export([is_local/1, is_local/2, is_pid/1, is_reference/1]).
-export([is_name/1, is_name/2, is_type/1]).
-export([node/1, nodestring/1, format/1, target/1]).
-export([to_pid/1, to_name/1, to_reference/1, to_pid_or_name/1]).
-export([is_identical/2]).
-export([is_local_pid/1, is_local_pid/2, is_local_name/1, is_local_name/2,
         is_local_reference/1, is_local_reference/2]).

-define(RR, partisan_remote_reference).
-define(PAD_TO, 65).

-type format() :: improper_list | tuple | uri.
-type improper_ref() :: nonempty_improper_list(node(), binary()).
-type tuple_ref() ::
    {?RR, node(),
        {partisan_process_reference, string()}
        | {partisan_encoded_reference, string()}
        | {partisan_registered_name_reference, string()}}.
-type uri_ref() :: <<_:64, _:_*8>>.
-type remote_ref() :: improper_ref() | tuple_ref() | uri_ref().
-type target() ::
    {pid, non_neg_integer(), non_neg_integer()}
    | {name, binary()}
    | {ref, binary()}.
%% Internal canonical form: refs keep their numbers.
-type parsed() ::
    {pid, non_neg_integer(), non_neg_integer()}
    | {name, binary()}
    | {ref, [non_neg_integer()]}.

-export_type([remote_ref/0, format/0, target/0]).

%% =============================================================================
%% API
%% =============================================================================

%% @doc Encodes a pid, reference or registered name (or `{Name, Node}') in the
%% configured format. Local terms are tagged with this node; a non-local pid
%% or reference is tagged with the node it belongs to.
-spec from_term(pid() | reference() | atom() | {atom(), node()}) -> remote_ref().
from_term({Name, Node}) when is_atom(Name), is_atom(Node) ->
    from_term(Name, Node);
from_term(Name) when is_atom(Name) ->
    from_term(Name, this_node());
from_term(Term) when erlang:is_pid(Term); erlang:is_reference(Term) ->
    case erlang:node(Term) of
        Local when Local =:= erlang:node() -> from_term(Term, this_node());
        Remote -> from_term(Term, Remote)
    end;
from_term(_) ->
    error(badarg).

%% @doc Encodes a pid, reference or registered name as living on `Node', in
%% the configured format.
-spec from_term(pid() | reference() | atom(), node()) -> remote_ref().
from_term(Term, Node) when is_atom(Node) ->
    encode(Node, parse_term(Term), get_format());
from_term(_, _) ->
    error(badarg).

%% @doc Decodes a remote reference located on this node back to a local
%% pid, reference or (already existing) atom. Fails with `badarg' for
%% references to other nodes or names that are not existing atoms.
-spec to_term(remote_ref()) -> pid() | reference() | atom().
to_term(Ref) ->
    case decode_local(Ref) of
        {pid, _, _} = Parsed -> local_pid(Parsed);
        {ref, _} = Parsed -> list_to_ref(binary_to_list(ref_text(Parsed)));
        {name, Name} -> existing_atom(Name)
    end.

%% @doc Returns whether `Ref' is located on this node.
-spec is_local(remote_ref()) -> boolean().
is_local(Ref) ->
    is_local(Ref, this_node()).

%% @doc Returns whether `Ref' is located on `Node'.
-spec is_local(remote_ref(), node()) -> boolean().
is_local(Ref, Node) when is_atom(Node) ->
    nodestring(Ref) =:= atom_to_binary(Node, utf8);
is_local(_, _) ->
    error(badarg).

%% @doc Returns whether `Term' is a remote reference of a pid (on any node).
%% `false' for any other term, never fails.
-spec is_pid(term()) -> boolean().
is_pid(Term) ->
    kind_of(Term) =:= pid.

%% @doc Returns whether `Term' is a remote reference of a reference (on any
%% node). `false' for any other term, never fails.
-spec is_reference(term()) -> boolean().
is_reference(Term) ->
    kind_of(Term) =:= ref.

%% @doc Returns whether `Term' is a remote reference of a registered name (on
%% any node). `false' for any other term, never fails.
-spec is_name(term()) -> boolean().
is_name(Term) ->
    kind_of(Term) =:= name.

%% @doc Returns whether `Term' is a remote reference of the registered name
%% `Name' (on any node); `false' for any other term. Fails with `badarg' when
%% `Name' is not an atom.
-spec is_name(term(), atom()) -> boolean().
is_name(Term, Name) when is_atom(Name) ->
    case safe_decode(Term) of
        {_, {name, Bin}} -> Bin =:= atom_to_binary(Name, utf8);
        _ -> false
    end;
is_name(_, _) ->
    error(badarg).

%% @doc Returns whether `Term' is a well-formed remote reference in any of
%% the three formats. Never fails.
-spec is_type(term()) -> boolean().
is_type(Term) ->
    safe_decode(Term) =/= error.

%% @doc Returns the node `Ref' is located on.
-spec node(remote_ref()) -> node().
node([Node | _] = Ref) when is_atom(Node) ->
    _ = decode(Ref),
    Node;
node({?RR, Node, _} = Ref) when is_atom(Node) ->
    _ = decode(Ref),
    Node;
node(Ref) ->
    try binary_to_atom(nodestring(Ref), utf8)
    catch error:_ -> error(badarg)
    end.

%% @doc Returns the name of the node `Ref' is located on, as a binary.
-spec nodestring(remote_ref()) -> binary().
nodestring(Ref) ->
    element(1, decode(Ref)).

%% @doc Returns a human readable binary for `Ref' in URI form (e.g.
%% `<<"partisan:pid:n@h:0.1.0">>'), whatever its format. Never padded.
-spec format(remote_ref()) -> binary().
format(Ref) ->
    {NodeBin, Parsed} = decode(Ref),
    uri(NodeBin, Parsed).

%% @doc Returns the process part of `Ref', used to address it on its node:
%% `{pid, Id, Serial}' for `<0.Id.Serial>', `{name, NameBin}' or
%% `{ref, RefText}' where `RefText' is `erlang:ref_to_list/1' output as a
%% binary (e.g. `<<"#Ref<0.1.2.3>">>').
-spec target(remote_ref()) -> target().
target(Ref) ->
    case decode(Ref) of
        {_, {ref, _} = Parsed} -> {ref, ref_text(Parsed)};
        {_, Parsed} -> Parsed
    end.

%% @doc Returns the local pid `Ref' denotes. Fails with `badarg' unless `Ref'
%% is a pid reference located on this node.
-spec to_pid(remote_ref()) -> pid().
to_pid(Ref) ->
    case decode_local(Ref) of
        {pid, _, _} = Parsed -> local_pid(Parsed);
        _ -> error(badarg)
    end.

%% @doc Returns the registered name (an atom) `Ref' denotes. Fails with
%% `badarg' unless `Ref' is a name reference located on this node whose name
%% is an existing atom: no atom is ever created from a reference.
-spec to_name(remote_ref()) -> atom().
to_name(Ref) ->
    case decode_local(Ref) of
        {name, Name} -> existing_atom(Name);
        _ -> error(badarg)
    end.

%% @doc Returns the local reference `Ref' denotes. Fails with `badarg' unless
%% `Ref' is a reference located on this node.
-spec to_reference(remote_ref()) -> reference().
to_reference(Ref) ->
    case decode_local(Ref) of
        {ref, _} = Parsed -> list_to_ref(binary_to_list(ref_text(Parsed)));
        _ -> error(badarg)
    end.

%% @doc Returns the local pid or registered name `Ref' denotes (see
%% {@link to_pid/1} and {@link to_name/1}). Fails with `badarg' for
%% references (`reference()') and for anything not located on this node.
-spec to_pid_or_name(remote_ref()) -> pid() | atom().
to_pid_or_name(Ref) ->
    case decode_local(Ref) of
        {pid, _, _} = Parsed -> local_pid(Parsed);
        {name, Name} -> existing_atom(Name);
        _ -> error(badarg)
    end.

%% @doc Returns whether `A' and `B' denote the same target on the same node.
%% Each argument is a remote reference in any format (padded or not) or a
%% plain pid, reference or registered name (an atom, taken as a name on this
%% node). Different formats of the same target are identical; so are a pid
%% and a name registered to it on this node (checked with `whereis', so a
%% name stops being identical to its pid once the process has died).
%% Fails with `badarg' when either argument is neither.
-spec is_identical(remote_ref() | pid() | reference() | atom(),
                   remote_ref() | pid() | reference() | atom()) -> boolean().
is_identical(A, B) ->
    CA = canonical(A),
    CB = canonical(B),
    CA =:= CB orelse same_process(CA, CB) orelse same_process(CB, CA).

%% @doc Returns whether `Ref' is a pid reference located on this node. Other
%% well-formed references answer `false'; malformed input fails with
%% `badarg'.
-spec is_local_pid(remote_ref()) -> boolean().
is_local_pid(Ref) ->
    is_local_kind(Ref, pid).

%% @doc Returns whether `Ref' denotes the local pid `Pid': a pid reference of
%% this node with the same pid, or (as in Partisan) a name reference of this
%% node whose name is registered to `Pid'. Fails with `badarg' when `Ref' is
%% malformed or `Pid' is not a pid.
-spec is_local_pid(remote_ref(), pid()) -> boolean().
is_local_pid(Ref, Pid) when erlang:is_pid(Pid) ->
    case decode_local_or_false(Ref) of
        {pid, _, _} = Parsed -> erlang:node(Pid) =:= erlang:node()
                                    andalso Parsed =:= parse_term(Pid);
        {name, Name} -> registered(Name) =:= Pid;
        _ -> false
    end;
is_local_pid(_, _) ->
    error(badarg).

%% @doc Returns whether `Ref' is a name reference located on this node.
%% Other well-formed references answer `false'; malformed input fails with
%% `badarg'.
-spec is_local_name(remote_ref()) -> boolean().
is_local_name(Ref) ->
    is_local_kind(Ref, name).

%% @doc Returns whether `Ref' is a name reference of this node naming `Name'.
%% Fails with `badarg' when `Ref' is malformed or `Name' is not an atom.
-spec is_local_name(remote_ref(), atom()) -> boolean().
is_local_name(Ref, Name) when is_atom(Name) ->
    decode_local_or_false(Ref) =:= {name, atom_to_binary(Name, utf8)};
is_local_name(_, _) ->
    error(badarg).

%% @doc Returns whether `Ref' is a remote reference of a reference created on
%% this node. Other well-formed references answer `false'; malformed input
%% fails with `badarg'.
-spec is_local_reference(remote_ref()) -> boolean().
is_local_reference(Ref) ->
    is_local_kind(Ref, ref).

%% @doc Returns whether `Ref' denotes the local reference `LocalRef'. Fails
%% with `badarg' when `Ref' is malformed or `LocalRef' is not a reference.
-spec is_local_reference(remote_ref(), reference()) -> boolean().
is_local_reference(Ref, LocalRef) when erlang:is_reference(LocalRef) ->
    erlang:node(LocalRef) =:= erlang:node()
        andalso decode_local_or_false(Ref) =:= parse_term(LocalRef);
is_local_reference(_, _) ->
    error(badarg).

%% =============================================================================
%% PRIVATE
%% =============================================================================

this_node() ->
    application:get_env(partisan, name, erlang:node()).

%% The target of a ref located on this node; badarg if malformed or remote.
decode_local(Ref) ->
    case decode_local_or_false(Ref) of
        false -> error(badarg);
        Parsed -> Parsed
    end.

%% The target of a ref located on this node, `false' if it is elsewhere;
%% badarg if malformed.
decode_local_or_false(Ref) ->
    {NodeBin, Parsed} = decode(Ref),
    case NodeBin =:= this_nodestring() of
        true -> Parsed;
        false -> false
    end.

is_local_kind(Ref, Kind) ->
    case decode_local_or_false(Ref) of
        false -> false;
        Parsed -> element(1, Parsed) =:= Kind
    end.

this_nodestring() ->
    atom_to_binary(this_node(), utf8).

%% `{NodeBin, parsed()}' for a ref or a plain pid, reference or name.
canonical(Pid) when erlang:is_pid(Pid); erlang:is_reference(Pid) ->
    {atom_to_binary(term_node(Pid), utf8), parse_term(Pid)};
canonical(Name) when is_atom(Name) ->
    {this_nodestring(), parse_term(Name)};
canonical(Ref) ->
    decode(Ref).

%% The node a pid or reference is tagged with (this partisan node for local
%% ones, as from_term/1 does).
term_node(Term) ->
    case erlang:node(Term) of
        Local when Local =:= erlang:node() -> this_node();
        Remote -> Remote
    end.

same_process({NodeBin, {pid, _, _} = Pid}, {NodeBin, {name, Name}}) ->
    NodeBin =:= this_nodestring() andalso registered(Name) =:= local_pid(Pid);
same_process(_, _) ->
    false.

%% The pid registered under the name `Name' (a binary), without creating the
%% atom; `undefined' when there is none.
registered(Name) ->
    try binary_to_existing_atom(Name, utf8) of
        Atom -> erlang:whereis(Atom)
    catch
        error:badarg -> undefined
    end.

existing_atom(Name) ->
    binary_to_existing_atom(Name, utf8).

local_pid(Parsed) ->
    list_to_pid(binary_to_list(pid_text(Parsed))).

get_format() ->
    case application:get_env(partisan, remote_ref_format, improper_list) of
        F when F =:= improper_list; F =:= tuple; F =:= uri -> F;
        Other -> error({invalid_remote_ref_format, Other})
    end.

%% The kind (`pid', `ref', `name') of a well-formed ref, `error' otherwise.
kind_of(Term) ->
    case safe_decode(Term) of
        {_, Parsed} -> element(1, Parsed);
        error -> error
    end.

safe_decode(Term) ->
    try decode(Term)
    catch error:badarg -> error
    end.

-spec parse_term(pid() | reference() | atom()) -> parsed().
parse_term(Pid) when erlang:is_pid(Pid) ->
    parse_pid(list_to_binary(pid_to_list(Pid)));
parse_term(Ref) when erlang:is_reference(Ref) ->
    <<"#Ref", Text/binary>> = list_to_binary(ref_to_list(Ref)),
    parse_ref(Text);
parse_term(Name) when is_atom(Name) ->
    {name, atom_to_binary(Name, utf8)};
parse_term(_) ->
    error(badarg).

-spec encode(node(), parsed(), format()) -> remote_ref().
encode(Node, {pid, _, _} = P, improper_list) ->
    [Node | <<"Pid#", (pid_text(P))/binary>>];
encode(Node, {ref, _} = P, improper_list) ->
    [Node | <<"Ref", (ref_text(P))/binary>>];
encode(Node, {name, Name}, improper_list) ->
    [Node | <<"Name#", Name/binary>>];
encode(Node, {pid, _, _} = P, tuple) ->
    {?RR, Node, {partisan_process_reference, binary_to_list(pid_text(P))}};
encode(Node, {ref, _} = P, tuple) ->
    {?RR, Node, {partisan_encoded_reference, binary_to_list(ref_text(P))}};
encode(Node, {name, Name}, tuple) ->
    {?RR, Node,
        {partisan_registered_name_reference, unicode:characters_to_list(Name)}};
encode(Node, P, uri) ->
    maybe_pad(uri(atom_to_binary(Node, utf8), P)).

uri(NodeBin, {pid, I, S}) ->
    <<"partisan:pid:", NodeBin/binary, ":", (dotted([0, I, S]))/binary>>;
uri(NodeBin, {ref, Ns}) ->
    <<"partisan:ref:", NodeBin/binary, ":", (dotted(Ns))/binary>>;
uri(NodeBin, {name, Name}) ->
    <<"partisan:name:", NodeBin/binary, ":", Name/binary>>.

maybe_pad(Bin) when byte_size(Bin) < ?PAD_TO ->
    case application:get_env(partisan, remote_ref_uri_padding, false) of
        true -> <<Bin/binary, 0:((?PAD_TO - byte_size(Bin)) * 8)>>;
        _ -> Bin
    end;
maybe_pad(Bin) ->
    Bin.

%% Returns `{NodeBin, parsed()}' or fails with badarg.
-spec decode(term()) -> {binary(), parsed()}.
decode(Term) ->
    try do_decode(Term)
    catch error:_ -> error(badarg)
    end.

do_decode([Node | <<"Pid#", Text/binary>>]) when is_atom(Node) ->
    {atom_to_binary(Node, utf8), parse_pid(Text)};
do_decode([Node | <<"Ref#Ref", Text/binary>>]) when is_atom(Node) ->
    {atom_to_binary(Node, utf8), parse_ref(Text)};
do_decode([Node | <<"Name#", Name/binary>>]) when is_atom(Node) ->
    {atom_to_binary(Node, utf8), parse_name(Name)};
do_decode({?RR, Node, {Tag, Text}}) when is_atom(Node), is_list(Text) ->
    {atom_to_binary(Node, utf8), decode_tuple_target(Tag, Text)};
do_decode(<<"partisan:", Rest/binary>>) ->
    decode_uri(unpad(Rest)).

decode_tuple_target(partisan_process_reference, Text) ->
    parse_pid(list_to_binary(Text));
decode_tuple_target(partisan_encoded_reference, Text) ->
    <<"#Ref", Bin/binary>> = list_to_binary(Text),
    parse_ref(Bin);
decode_tuple_target(partisan_registered_name_reference, Text) ->
    parse_name(unicode:characters_to_binary(Text)).

decode_uri(<<"pid:", Rest/binary>>) ->
    [NodeBin, Text] = split_node(Rest, trailing),
    {NodeBin, parse_pid(<<"<", Text/binary, ">">>)};
decode_uri(<<"ref:", Rest/binary>>) ->
    [NodeBin, Text] = split_node(Rest, trailing),
    {NodeBin, parse_ref(<<"<", Text/binary, ">">>)};
decode_uri(<<"name:", Rest/binary>>) ->
    [NodeBin, Name] = split_node(Rest, leading),
    {NodeBin, parse_name(Name)}.

%% Names may contain `:' so split on the first one; pid/ref texts cannot, so
%% split on the last one (allows IPv6 hosts in node names).
split_node(Bin, leading) ->
    [<<_, _/binary>>, _] = binary:split(Bin, <<":">>);
split_node(Bin, trailing) ->
    {Pos, 1} = lists:last(binary:matches(Bin, <<":">>)),
    <<Node:Pos/binary, ":", Text/binary>> = Bin,
    [<<_, _/binary>>, _] = [Node, Text].

unpad(<<>>) ->
    <<>>;
unpad(Bin) ->
    case Bin of
        <<H:(byte_size(Bin) - 1)/binary, C>> when C =:= $\s; C =:= 0 -> unpad(H);
        _ -> Bin
    end.

%% `<A.Id.Serial>' -> {pid, Id, Serial}
parse_pid(Text) ->
    [_, I, S] = ints(unwrap(Text)),
    {pid, I, S}.

%% `<A.B.C.D...>' -> {ref, [0, B, C, D...]}
parse_ref(Text) ->
    [_, _, _, _ | _] = [_ | T] = ints(unwrap(Text)),
    {ref, [0 | T]}.

parse_name(Name) when is_binary(Name) ->
    {name, Name}.

unwrap(Bin) ->
    <<"<", Inner:(byte_size(Bin) - 2)/binary, ">">> = Bin,
    Inner.

ints(Bin) ->
    [int(Part) || Part <- binary:split(Bin, <<".">>, [global])].

int(<<D, _/binary>> = Bin) when D >= $0, D =< $9 ->
    binary_to_integer(Bin).

dotted(Ints) ->
    iolist_to_binary(lists:join($., [integer_to_binary(I) || I <- Ints])).

pid_text({pid, I, S}) ->
    <<"<", (dotted([0, I, S]))/binary, ">">>.

ref_text({ref, Ints}) ->
    <<"#Ref<", (dotted(Ints))/binary, ">">>.
