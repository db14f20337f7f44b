-module(partisan_gen_tests).

-include_lib("eunit/include/eunit.hrl").

call_opts_test_() ->
    [?_assertEqual({5000, undefined}, partisan_gen:call_opts(5000, 1)),
     ?_assertEqual({infinity, undefined}, partisan_gen:call_opts(infinity, 1)),
     ?_assertEqual({7, data}, partisan_gen:call_opts([{timeout, 7}, {channel, data}], 1)),
     ?_assertEqual({1, data}, partisan_gen:call_opts(#{channel => data}, 1)),
     ?_assertError({badarg, {timeout, -1}}, partisan_gen:call_opts([{timeout, -1}], 1)),
     ?_assertError({badarg, nope}, partisan_gen:call_opts(nope, 1))].

process_opts_test() ->
    ?assertEqual(#{}, partisan_gen:get_opts()),
    ?assertEqual(undefined, partisan_gen:get_opts(channel)),
    ok = partisan_gen:set_opts([{channel, data}]),
    ?assertEqual(data, partisan_gen:get_opts(channel)),
    %% The process's channel is the default of its calls; an explicit one wins.
    ?assertEqual({5000, data}, partisan_gen:call_opts(5000, 1)),
    ?assertEqual({5000, other}, partisan_gen:call_opts([{timeout, 5000}, {channel, other}], 1)),
    ?assertEqual(data, partisan_otp:channel([])),
    ?assertEqual(#{channel => data}, partisan_gen:erase_opts()),
    ?assertEqual({5000, undefined}, partisan_gen:call_opts(5000, 1)),
    ?assertEqual(#{}, partisan_gen:erase_opts()).

strip_opts_test() ->
    ?assertEqual([{timeout, 1}, debug], partisan_gen:strip_opts([{timeout, 1}, {channel, c}, debug])).
