%% @doc The `partisan' OTP application: validates config, loads the NIF, starts the tree.
-module(partisan_app).
-behaviour(application).

-export([start/2, stop/1]).

%% @private
-spec start(application:start_type(), term()) -> {ok, pid()} | {error, term()}.
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
-spec stop(term()) -> ok.
stop(_State) ->
    ok.
