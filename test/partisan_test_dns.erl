%% A small authoritative DNS server for the tests: real DNS messages over UDP on 127.0.0.1 (a
%% random port), encoded and decoded with kernel's `inet_dns', answering from a zone the test
%% sets and changes. Point `inet_res' at it with `{nameservers, [{{127,0,0,1}, Port}]}' (the DNS
%% discovery backend's `nameservers' option).
%%
%% A zone maps `{Name, Type}' (the name in lower case, no trailing dot) to a list of record
%% data in `inet_dns' form: an IP tuple for `a', `{Priority, Weight, Port, Target}' for `srv', a
%% host name for `ptr'. A name with no record of any type is NXDOMAIN.
-module(partisan_test_dns).

-export([start/1, set_zone/2, queries/1, stop/1]).

-type zone() :: #{{string(), atom()} => [term()]}.

%% Starts the server (not linked to the caller): `{ok, Server, Port}'.
-spec start(zone()) -> {ok, pid(), inet:port_number()}.
start(Zone) ->
    Parent = self(),
    Pid = spawn(fun() ->
                        {ok, Socket} = gen_udp:open(0, [binary, {ip, {127, 0, 0, 1}}, {active, true}]),
                        {ok, Port} = inet:port(Socket),
                        Parent ! {self(), port, Port},
                        loop(Socket, Zone, [])
                end),
    receive {Pid, port, Port} -> {ok, Pid, Port} after 5000 -> error(dns_start_timeout) end.

%% Replaces the zone.
-spec set_zone(pid(), zone()) -> ok.
set_zone(Server, Zone) ->
    call(Server, {set_zone, Zone}).

%% The queries answered so far, oldest first: `{Name, Type}'.
-spec queries(pid()) -> [{string(), atom()}].
queries(Server) ->
    call(Server, queries).

-spec stop(pid()) -> ok.
stop(Server) ->
    call(Server, stop).

call(Server, Request) ->
    Ref = erlang:monitor(process, Server),
    Server ! {Request, self(), Ref},
    receive
        {Ref, Reply} -> erlang:demonitor(Ref, [flush]), Reply;
        {'DOWN', Ref, process, _, Reason} -> error({dns_server_down, Reason})
    after 5000 -> error(dns_server_timeout)
    end.

loop(Socket, Zone, Seen) ->
    receive
        {udp, Socket, IP, Port, Packet} ->
            case inet_dns:decode(Packet) of
                {ok, Msg} ->
                    {Reply, Asked} = answer(Msg, Zone),
                    ok = gen_udp:send(Socket, IP, Port, inet_dns:encode(Reply)),
                    loop(Socket, Zone, Asked ++ Seen);
                _ ->
                    loop(Socket, Zone, Seen)
            end;
        {{set_zone, Zone1}, From, Ref} ->
            From ! {Ref, ok},
            loop(Socket, Zone1, Seen);
        {queries, From, Ref} ->
            From ! {Ref, lists:reverse(Seen)},
            loop(Socket, Zone, Seen);
        {stop, From, Ref} ->
            gen_udp:close(Socket),
            From ! {Ref, ok}
    end.

answer(Msg, Zone) ->
    Questions = inet_dns:msg(Msg, qdlist),
    Asked = [{string:lowercase(inet_dns:dns_query(Q, domain)), inet_dns:dns_query(Q, type)}
             || Q <- Questions],
    Answers = [inet_dns:make_rr([{domain, Name}, {type, Type}, {class, in}, {ttl, 0}, {data, Data}])
               || {Name, Type} <- Asked, Data <- maps:get({Name, Type}, Zone, [])],
    Known = lists:all(fun({Name, _}) -> lists:any(fun({N, _}) -> N =:= Name end, maps:keys(Zone)) end,
                      Asked),
    Header = inet_dns:make_header(inet_dns:msg(Msg, header),
                                  [{qr, true}, {aa, true}, {ra, true},
                                   {rcode, case Known of true -> 0; false -> 3 end}]),
    {inet_dns:make_msg(Msg, [{header, Header}, {anlist, Answers}]), lists:reverse(Asked)}.
