%% @doc An `-epmd_module' for the benchmark peers: like `erl_epmd', except that the distribution
%% port of a node set with `bench_common:bench_epmd_set(Node, Port)' is `Port' (a link emulator
%% in front of that node's real listener). Everything else is delegated to `erl_epmd'.
-module(bench_epmd).

-export([start_link/0, register_node/2, register_node/3, port_please/2, port_please/3,
         listen_port_please/2, names/0, names/1, address_please/3]).

start_link() -> erl_epmd:start_link().

register_node(Name, Port) -> erl_epmd:register_node(Name, Port).

register_node(Name, Port, Family) -> erl_epmd:register_node(Name, Port, Family).

listen_port_please(Name, Host) -> erl_epmd:listen_port_please(Name, Host).

port_please(Name, Host) -> port_please(Name, Host, infinity).

port_please(Name, Host, Timeout) ->
    Node = list_to_atom(lists:flatten([Name, "@", host_string(Host)])),
    case persistent_term:get({bench_epmd, Node}, undefined) of
        undefined -> erl_epmd:port_please(Name, Host, Timeout);
        Port -> {port, Port, 6}
    end.

names() -> erl_epmd:names().

names(Host) -> erl_epmd:names(Host).

address_please(Name, Host, Family) -> erl_epmd:address_please(Name, Host, Family).

host_string(Host) when is_list(Host) -> Host;
host_string(Host) when is_atom(Host) -> atom_to_list(Host);
host_string(Ip) when is_tuple(Ip) -> inet:ntoa(Ip).
