%% @doc Validation of node specs given to `join/1' (or written by hand).
%%
%% A spec is `#{name := node(), listen_addrs := [Addr, ...], channels => Channels}' where `Addr'
%% is `#{ip := IP, port := 1..65535}' or `{IP, Port}', `IP' an IPv4 tuple of 0..255, an IPv6
%% tuple of 0..65535 or a string, and `Channels' what Partisan v5's node spec allows: a map
%% `#{Name => #{parallelism => N, monotonic => B}}' (`monotonic' optional) or a list of names
%% and `{Name, Opts}'. Nothing is truncated: `{127,0,0,257}' or port 65536 is refused with a
%% reason that says what is wrong, never cast to another address.
-module(partisan_node_spec).

-export([validate/1]).

%% @doc The spec with its addresses and channels normalised, or `{error, {bad_node_spec, Why}}'.
-spec validate(term()) -> {ok, partisan:node_spec()} | {error, {bad_node_spec, string()}}.
validate(Spec) ->
    try
        {ok, check(Spec)}
    catch
        throw:{bad, Fmt, Args} -> {error, {bad_node_spec, lists:flatten(io_lib:format(Fmt, Args))}};
        throw:{invalid, channels, Why} -> {error, {bad_node_spec, "channels: " ++ Why}}
    end.

check(#{name := Name, listen_addrs := Addrs} = Spec) ->
    is_atom(Name) andalso length(string:split(atom_to_list(Name), "@")) =:= 2
        orelse bad("name ~p is not an atom name@host", [Name]),
    is_list(Addrs) andalso Addrs =/= []
        orelse bad("listen_addrs ~p is not a non-empty list of #{ip, port}", [Addrs]),
    Channels = maps:get(channels, Spec, #{}),
    Spec#{listen_addrs => [addr(A) || A <- Addrs],
          channels => partisan_config:channel_map(Channels, partisan_config:parallelism())};
check(Spec) when is_map(Spec) ->
    bad("~p lacks ~p", [Spec, [K || K <- [name, listen_addrs], not is_map_key(K, Spec)]]);
check(Other) ->
    bad("~p is not a map #{name, listen_addrs, channels}", [Other]).

addr(#{ip := IP, port := Port}) -> addr({IP, Port});
addr({IP, Port}) ->
    is_integer(Port) andalso Port >= 1 andalso Port =< 65535
        orelse bad("port ~p is not an integer from 1 to 65535", [Port]),
    #{ip => ip(IP), port => Port};
addr(Other) ->
    bad("listen address ~p is not #{ip => IP, port => Port}", [Other]).

ip({_, _, _, _} = IP) -> octets(IP, 255);
ip({_, _, _, _, _, _, _, _} = IP) -> octets(IP, 65535);
ip(IP) when is_list(IP) ->
    case inet:parse_address(IP) of
        {ok, Parsed} -> Parsed;
        {error, _} -> bad("ip ~p is not an IP address", [IP])
    end;
ip(IP) ->
    bad("ip ~p is not an IP address tuple", [IP]).

octets(IP, Max) ->
    lists:all(fun(X) -> is_integer(X) andalso X >= 0 andalso X =< Max end, tuple_to_list(IP))
        orelse bad("ip ~p has a part outside 0..~p", [IP, Max]),
    IP.

-spec bad(string(), [term()]) -> no_return().
bad(Fmt, Args) -> throw({bad, Fmt, Args}).
