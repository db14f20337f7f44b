%% A gen_statem for the behaviours suite: a door that locks itself again after a state timeout,
%% and an event timeout that reports inactivity.
-module(partisan_otp_test_statem).
-behaviour(gen_statem).

-export([start/2]).
-export([init/1, callback_mode/0, locked/3, open/3]).

%% Registered as `Name'; `OpenMs' is how long the door stays open (state timeout).
start(Name, OpenMs) -> partisan_gen_statem:start({local, Name}, ?MODULE, OpenMs, []).

init(OpenMs) -> {ok, locked, #{open_ms => OpenMs, idle => 0, watcher => undefined}}.

callback_mode() -> state_functions.

locked({call, From}, unlock, D = #{open_ms := Ms}) ->
    {next_state, open, D, [{reply, From, opened}, {state_timeout, Ms, lock}]};
locked({call, From}, state, D) ->
    {keep_state, D, [{reply, From, locked}]};
locked({call, From}, {idle_after, Ms}, D) ->
    %% An event timeout: fires unless another event comes within Ms.
    {keep_state, D, [{reply, From, ok}, {timeout, Ms, idle}]};
locked(timeout, idle, D = #{idle := N, watcher := W}) ->
    W =/= undefined andalso partisan:forward_message(W, idle, #{transitive => true}),
    {keep_state, D#{idle := N + 1}};
locked({call, From}, idle_count, D = #{idle := N}) ->
    {keep_state, D, [{reply, From, N}]};
locked(cast, {watch, Pid}, D) ->
    {keep_state, D#{watcher := Pid}}.

open(state_timeout, lock, D = #{watcher := W}) ->
    W =/= undefined andalso partisan:forward_message(W, locked_again, #{transitive => true}),
    {next_state, locked, D};
open({call, From}, state, D) ->
    {keep_state, D, [{reply, From, open}]};
open({call, From}, unlock, D) ->
    {keep_state, D, [{reply, From, already_open}]}.
