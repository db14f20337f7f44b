%% @doc The `partisan' OTP application: validates config, loads the NIF, starts the tree.
-module(partisan_app).
-behaviour(application).

-export([start/2, stop/1]).

%% @private
start(_Type, _Args) ->
    %% The data plane checks its own configuration keys: the NIF first.
    case partisan_nif:load() of
        ok ->
            ok = partisan_telemetry:init(),
            case partisan_config:init() of
                ok -> partisan_sup:start_link();
                {error, _} = Error -> Error
            end;
        {error, _} = Error ->
            Error
    end.

%% @private
stop(_State) ->
    ok.
