%% A supervisor for the behaviours suite, started with no children; children are added remotely.
-module(partisan_otp_test_sup).
-behaviour(supervisor).

-export([start/1, init/1]).

%% Registered as `Name', not linked to the caller (it outlives the rpc that started it).
start(Name) ->
    Self = self(),
    Pid = spawn(fun() ->
                        {ok, Sup} = partisan_gen_supervisor:start_link({local, Name}, ?MODULE, []),
                        Self ! {started, Sup},
                        receive never -> ok end
                end),
    receive {started, Sup} -> {ok, Sup, Pid} after 5000 -> error(timeout) end.

init([]) -> {ok, {#{strategy => one_for_one, intensity => 10, period => 10}, []}}.
