%% @doc Supervises the greeter.
-module(erlang_release_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

%% @doc Starts the supervisor.
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

%% @private
init([]) ->
    {ok, {#{strategy => one_for_one},
          [#{id => erlang_release_greeter, start => {erlang_release_greeter, start_link, []}}]}}.
