%% @doc The example application: a supervisor with the greeter.
-module(erlang_release_app).
-behaviour(application).

-export([start/2, stop/1]).

%% @private
start(_Type, _Args) ->
    erlang_release_sup:start_link().

%% @private
stop(_State) ->
    ok.
