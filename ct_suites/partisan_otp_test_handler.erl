%% A gen_event handler for the behaviours suite: collects the events it sees.
-module(partisan_otp_test_handler).
-behaviour(gen_event).

-export([init/1, handle_event/2, handle_call/2, handle_info/2, terminate/2]).

init(Tag) -> {ok, {Tag, []}}.

handle_event(Event, {Tag, Seen}) -> {ok, {Tag, [Event | Seen]}}.

handle_call(seen, S = {_, Seen}) -> {ok, lists:reverse(Seen), S};
handle_call(tag, S = {Tag, _}) -> {ok, Tag, S}.

handle_info(_, S) -> {ok, S}.

terminate(_, _) -> ok.
