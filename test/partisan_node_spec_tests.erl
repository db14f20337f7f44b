-module(partisan_node_spec_tests).
-include_lib("eunit/include/eunit.hrl").

spec(Addrs) -> #{name => 'b@127.0.0.1', listen_addrs => Addrs}.

%% Out-of-range parts are refused, never cast to another address (the NIF's decoders would turn
%% {127,0,0,257} into 127.0.0.1 and P + 65536 into P).
out_of_range_is_refused_test_() ->
    Bad = [spec([#{ip => {127, 0, 0, 257}, port => 9000}]),
           spec([#{ip => {127, 0, 0, 1}, port => 9000 + 65536}]),
           spec([#{ip => {127, 0, 0, 1}, port => 0}]),
           spec([#{ip => {127, 0, 0, 1}, port => -1}]),
           spec([#{ip => {0, 0, 0, 0, 0, 0, 0, 65536}, port => 1}]),
           spec([#{ip => {127, 0, 0}, port => 1}]),
           spec([#{ip => "not an address", port => 1}]),
           spec([#{ip => {127, 0, 0, 1}}]),
           spec([]),
           spec(not_a_list),
           (spec([{{127, 0, 0, 1}, 1}]))#{channels => #{data => #{parallelism => 0}}},
           (spec([{{127, 0, 0, 1}, 1}]))#{channels => [{1, 2, 3}]},
           (spec([{{127, 0, 0, 1}, 1}]))#{name => "b@127.0.0.1"},
           (spec([{{127, 0, 0, 1}, 1}]))#{name => nohost},
           #{name => 'b@h'},
           "b@127.0.0.1",
           42],
    [?_assertMatch({error, {bad_node_spec, [_ | _]}}, partisan_node_spec:validate(S)) || S <- Bad].

%% What Partisan v5's node_spec allows when written by hand.
hand_written_specs_are_accepted_test() ->
    {ok, A} = partisan_node_spec:validate((spec([#{ip => {127, 0, 0, 1}, port => 9000}]))#{
                channels => #{data => #{parallelism => 2}}}),
    ?assertEqual(#{parallelism => 2, monotonic => false}, maps:get(data, maps:get(channels, A))),
    {ok, B} = partisan_node_spec:validate((spec([{"127.0.0.1", 9000}]))#{
                channels => [data, {state, #{monotonic => true}}]}),
    ?assertEqual([#{ip => {127, 0, 0, 1}, port => 9000}], maps:get(listen_addrs, B)),
    ?assertMatch(#{data := #{monotonic := false}, state := #{monotonic := true}},
                 maps:get(channels, B)),
    {ok, C} = partisan_node_spec:validate(spec([#{ip => {0, 0, 0, 0, 0, 0, 0, 1}, port => 1}])),
    ?assertEqual(#{}, maps:get(channels, C)).
