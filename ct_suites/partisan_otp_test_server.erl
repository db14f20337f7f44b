%% A gen_server for the OTP-layer suites: a key-value store whose calls can be slowed down,
%% crash or stop the server, and which records who called it.
-module(partisan_otp_test_server).
-behaviour(gen_server).

-export([start/1, start/2, start_link/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

%% Starts a server registered as `Name' (not linked: it outlives the rpc that started it).
start(Name) -> start(Name, []).
start(Name, Opts) -> partisan_gen_server:start({local, Name}, ?MODULE, #{}, Opts).

start_link(Name) -> partisan_gen_server:start_link({local, Name}, ?MODULE, #{}, []).

init(State) -> {ok, State}.

handle_call({put, K, V}, _From, S) -> {reply, ok, S#{K => V}};
handle_call({get, K}, _From, S) -> {reply, maps:get(K, S, undefined), S};
handle_call({sleep, Ms}, _From, S) -> timer:sleep(Ms), {reply, slept, S};
handle_call({later, Ms}, From, S) ->
    %% Answers from another process, after a while.
    spawn(fun() -> timer:sleep(Ms), partisan_gen_server:reply(From, later) end),
    {noreply, S};
handle_call({stop, Reason}, _From, S) -> {stop, Reason, S};
handle_call({stop_after, Ms, Reason}, _From, S) -> timer:sleep(Ms), {stop, Reason, S};
handle_call(crash, _From, _S) -> error(crashed);
handle_call(from, From, S) -> {reply, From, S};
handle_call(node, _From, S) -> {reply, node(), S}.

handle_cast({put, K, V}, S) -> {noreply, S#{K => V}}.

handle_info({put, K, V}, S) -> {noreply, S#{K => V}};
handle_info(_, S) -> {noreply, S}.
