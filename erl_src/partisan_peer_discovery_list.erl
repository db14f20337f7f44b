%% @doc A `partisan_peer_discovery_agent' backend over a static list of nodes (Partisan v5's).
%%
%% ```
%% {peer_discovery, #{enabled => true,
%%                    type => partisan_peer_discovery_list,
%%                    config => #{addresses => [<<"app@10.0.0.1:9000">>,
%%                                              "app@10.0.0.2:9000",
%%                                              {'app@10.0.0.3', 9000},
%%                                              <<"app@db.example.com">>]}}}
%% '''
%%
%% Each address is `Name@Host:Port' (a binary or a string) or `{Node, Port}' (the node an atom or
%% a string); without a port, this node's own listen port is assumed (`listen_port', or the port
%% of the first of `listen_addrs'), which must then be set. `Host' is an IP address or a host
%% name, resolved at every lookup (so a name that does not resolve yet is found later); this
%% node's own entry is skipped, so every node may share one list. The specs carry this node's
%% channels, as in v5.
-module(partisan_peer_discovery_list).
-behaviour(partisan_peer_discovery_agent).

-export([init/1, lookup/2]).

-include_lib("kernel/include/logger.hrl").

-type address() :: binary() | string() | {atom() | string(), inet:port_number()}.
-type state() :: #{addresses := [{Name :: string(), Host :: string(), inet:port_number()}]}.

%% @doc Checks the addresses (`#{addresses => [address()]}'). `{error, Why}' names the entry
%% that is wrong and the forms accepted.
-spec init(#{addresses := [address()]}) -> {ok, state()} | {error, string()}.
init(#{addresses := Addresses} = Config) when is_list(Addresses) ->
    case maps:keys(Config) -- [addresses] of
        [] ->
            try
                {ok, #{addresses => [parse(A) || A <- Addresses]}}
            catch
                throw:{bad, Why} -> {error, Why}
            end;
        Unknown ->
            {error, text("unknown keys ~p in the list backend's config; it takes addresses", [Unknown])}
    end;
init(Config) ->
    {error, text("the list backend's config ~p must be #{addresses => [\"name@host:port\", ...]}",
                 [Config])}.

%% @doc The node specs of the listed nodes whose host resolves, this node excepted.
-spec lookup(state(), timeout()) -> {ok, [partisan:node_spec()], state()}.
lookup(State = #{addresses := Addresses}, _Timeout) ->
    Me = partisan:node(),
    Channels = partisan_config:get(channels, #{}),
    Specs = lists:filtermap(
              fun({Name, Host, Port}) ->
                      Node = list_to_atom(Name ++ "@" ++ Host),
                      case {Node, resolve(Host)} of
                          {Me, _} ->
                              false;
                          {_, {ok, IP}} ->
                              {true, #{name => Node, listen_addrs => [#{ip => IP, port => Port}],
                                       channels => Channels}};
                          {_, {error, Reason}} ->
                              ?LOG_INFO("partisan peer discovery: host ~ts of ~p does not resolve "
                                        "(~p); skipped until the next lookup", [Host, Node, Reason]),
                              false
                      end
              end, Addresses),
    {ok, Specs, State}.

resolve(Host) ->
    case inet:parse_address(Host) of
        {ok, IP} -> {ok, IP};
        {error, _} ->
            case inet:getaddr(Host, inet) of
                {ok, IP} -> {ok, IP};
                {error, _} -> inet:getaddr(Host, inet6)
            end
    end.

parse(Address) when is_binary(Address) ->
    parse(unicode:characters_to_list(Address), Address);
parse({Node, Port}) when is_atom(Node) ->
    parse({atom_to_list(Node), Port});
parse({Node, Port} = Address) when is_list(Node), is_integer(Port), Port >= 1, Port =< 65535 ->
    {Name, Host} = name_host(Node, Address),
    {Name, Host, Port};
parse(Address) when is_list(Address) ->
    parse(Address, Address);
parse(Address) ->
    bad(Address).

parse(String, Address) when is_list(String) ->
    {NodeString, Port} =
        case string:split(String, ":", trailing) of
            [Node, PortString] -> {Node, {given, PortString}};
            [Node] -> {Node, default}
        end,
    {Name, Host} = name_host(NodeString, Address),
    {Name, Host, port(Port, Address)};
parse(_, Address) ->
    bad(Address).

port({given, PortString}, Address) ->
    case catch list_to_integer(PortString) of
        P when is_integer(P), P >= 1, P =< 65535 -> P;
        _ -> bad(Address)
    end;
port(default, Address) ->
    default_port(Address).

name_host(Node, Address) ->
    case string:split(Node, "@") of
        [Name = [_ | _], Host = [_ | _]] -> {Name, Host};
        _ -> bad(Address)
    end.

%% Without a port, the nodes are assumed to listen where this one does.
default_port(Address) ->
    Port = case partisan_config:get(listen_port, 0) of
        0 ->
            case partisan_config:get(listen_addrs, []) of
                [#{port := P} | _] -> P;
                _ -> 0
            end;
        P ->
            P
    end,
    case Port of
        P1 when is_integer(P1), P1 > 0 -> P1;
        _ -> throw({bad, text("address ~p has no port and this node's listen_port is not set: "
                              "write \"name@host:port\" or set listen_port", [Address])})
    end.

-spec bad(term()) -> no_return().
bad(Address) ->
    throw({bad, text("address ~p is not \"name@host:port\", \"name@host\" or {Node, Port} "
                     "(port 1..65535)", [Address])}).

text(Fmt, Args) ->
    lists:flatten(io_lib:format(Fmt, Args)).
