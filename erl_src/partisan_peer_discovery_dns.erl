%% @doc A `partisan_peer_discovery_agent' backend over DNS (Partisan v5's), for one node per host
%% (a Kubernetes headless service, a Consul service, a round-robin name).
%%
%% ```
%% {peer_discovery, #{enabled => true,
%%                    type => partisan_peer_discovery_dns,
%%                    config => #{record_type => a,            % a | srv | fqdns
%%                                name => "app.default.svc.cluster.local",
%%                                nodename => "app"}}}
%% '''
%%
%% - `a': every address `IP' of `name' is the node `nodename@IP' (the address as text), listening
%%   on this node's listen port (`listen_port', or the port of the first of `listen_addrs').
%% - `fqdns': the same addresses, and the node is `nodename@Host' where `Host' is the address's
%%   PTR record (reverse lookup).
%% - `srv': every SRV record of `name' is the node `nodename@Target', listening on the record's
%%   port at the target's addresses (A records; the target may be an IP address).
%%
%% Addresses of one node are merged into one spec. `name' and `nodename' may be strings or
%% binaries. An extension of this release: `nameservers => [{IP, Port}]' queries these servers
%% instead of the system's resolver configuration (e.g. Consul's DNS on `{{127,0,0,1}, 8600}').
%% A failed lookup (no such name, a timeout) is `{error, {dns, Name, Reason}}'; the agent logs it
%% and tries again at the next polling interval.
-module(partisan_peer_discovery_dns).
-behaviour(partisan_peer_discovery_agent).

-export([init/1, lookup/2]).

-type config() :: #{record_type := a | srv | fqdns, name := string() | binary(),
                    nodename := string() | binary(),
                    nameservers => [{inet:ip_address(), inet:port_number()}]}.
-type state() :: #{record_type := a | srv | fqdns, name := string(), nodename := string(),
                   resolver_opts := list()}.

%% @doc Checks the options. `{error, Why}' says which one is wrong.
-spec init(config()) -> {ok, state()} | {error, string()}.
init(Config) when is_map(Config) ->
    Known = [record_type, name, nodename, nameservers],
    Type = maps:get(record_type, Config, undefined),
    Name = text_opt(name, Config),
    Nodename = text_opt(nodename, Config),
    NS = maps:get(nameservers, Config, []),
    Checks = [{is_list(Name) andalso Name =/= [],
               "the DNS backend needs name => \"the DNS name to look up\" (a string or binary); "
               "got ~p", [maps:get(name, Config, undefined)]},
              {is_list(Nodename) andalso Nodename =/= [],
               "the DNS backend needs nodename => \"the name part of the nodes' names\" (a string "
               "or binary); got ~p", [maps:get(nodename, Config, undefined)]},
              {lists:member(Type, [a, srv, fqdns]), "record_type ~p must be a, srv or fqdns", [Type]},
              {is_list(NS) andalso lists:all(fun is_nameserver/1, NS),
               "nameservers ~p must be a list of {IP, Port}", [NS]},
              {maps:keys(Config) -- Known =:= [],
               "unknown keys ~p in the DNS backend's config; known: ~p", [maps:keys(Config) -- Known, Known]},
              {Type =:= srv orelse own_port() > 0,
               "record_type ~p gives addresses without ports: the nodes found are taken to listen "
               "on this node's port, so set listen_port (not 0)", [Type]}],
    case [{Fmt, Args} || {false, Fmt, Args} <- Checks] of
        [] ->
            {ok, #{record_type => Type, name => Name, nodename => Nodename,
                   resolver_opts => [{nameservers, NS} || NS =/= []]}};
        [{Fmt, Args} | _] ->
            error_text(Fmt, Args)
    end;
init(Config) ->
    error_text("the DNS backend's config ~p must be a map", [Config]).

%% @doc The specs of the nodes the records name (see the module doc).
-spec lookup(state(), timeout()) -> {ok, [partisan:node_spec()], state()}
                                     | {error, {dns, string(), term()}, state()}.
lookup(State = #{record_type := Type, name := Name, nodename := Nodename}, Timeout) ->
    Opts = maps:get(resolver_opts, State),
    case answers(Name, query_type(Type), Opts, Timeout) of
        {ok, Records} ->
            Found = lists:flatmap(fun(R) -> nodes(Type, R, Opts, Timeout) end, Records),
            {ok, to_specs(Found, Nodename), State};
        {error, Reason} ->
            {error, {dns, Name, Reason}, State}
    end.

query_type(srv) -> srv;
query_type(_) -> a.

%% The data of the answers of type `Type' (CNAMEs followed by the server).
answers(Name, Type, Opts, Timeout) ->
    case inet_res:resolve(Name, in, Type, Opts, Timeout) of
        {ok, Msg} ->
            {ok, [inet_dns:rr(RR, data) || RR <- inet_dns:msg(Msg, anlist),
                                           inet_dns:rr(RR, type) =:= Type]};
        {error, Reason} ->
            {error, Reason}
    end.

%% `{Host, ListenAddr}' pairs.
nodes(a, IP, _Opts, _Timeout) ->
    [{inet:ntoa(IP), #{ip => IP, port => own_port()}}];
nodes(fqdns, IP, Opts, Timeout) ->
    case answers(reverse_name(IP), ptr, Opts, Timeout) of
        {ok, [Host | _]} -> [{Host, #{ip => IP, port => own_port()}}];
        _ -> []
    end;
nodes(srv, {_Priority, _Weight, Port, Target}, Opts, Timeout) ->
    case inet:parse_address(Target) of
        {ok, IP} ->
            [{Target, #{ip => IP, port => Port}}];
        {error, _} ->
            case answers(Target, a, Opts, Timeout) of
                {ok, IPs} -> [{Target, #{ip => IP, port => Port}} || IP <- IPs];
                {error, _} -> []
            end
    end.

reverse_name({A, B, C, D}) ->
    lists:flatten(io_lib:format("~b.~b.~b.~b.in-addr.arpa", [D, C, B, A]));
reverse_name(IP6) ->
    Nibbles = lists:flatmap(fun(W) -> [(W bsr S) band 15 || S <- [12, 8, 4, 0]] end,
                            tuple_to_list(IP6)),
    lists:flatten([[integer_to_list(N, 16), $.] || N <- lists:reverse(Nibbles)]) ++ "ip6.arpa".

to_specs(Found, Nodename) ->
    Channels = partisan_config:get(channels, #{}),
    Merged = lists:foldl(
               fun({Host, Addr}, Acc) ->
                       Node = list_to_atom(Nodename ++ "@" ++ Host),
                       maps:update_with(Node, fun(As) -> As ++ [Addr] end, [Addr], Acc)
               end, #{}, Found),
    [#{name => Node, listen_addrs => lists:usort(Addrs), channels => Channels}
     || {Node, Addrs} <- maps:to_list(Merged)].

own_port() ->
    case partisan_config:get(listen_port, 0) of
        P when is_integer(P), P > 0 -> P;
        _ ->
            case partisan_config:get(listen_addrs, []) of
                [#{port := P} | _] -> P;
                _ -> 0
            end
    end.

text_opt(Key, Config) ->
    case maps:get(Key, Config, undefined) of
        B when is_binary(B) -> unicode:characters_to_list(B);
        L when is_list(L) -> L;
        Other -> Other
    end.

is_nameserver({IP, Port}) when is_tuple(IP) ->
    is_integer(Port) andalso Port >= 1 andalso Port =< 65535 andalso
        (tuple_size(IP) =:= 4 orelse tuple_size(IP) =:= 8);
is_nameserver(_) ->
    false.

error_text(Fmt, Args) ->
    {error, lists:flatten(io_lib:format(Fmt, Args))}.
