%% partisan_ct in a VM that is not alive (EUnit's): a clear error instead of a failure inside
%% OTP's peer module.
-module(partisan_ct_tests).
-include_lib("eunit/include/eunit.hrl").

not_alive_is_a_clear_error_test() ->
    case erlang:is_alive() of
        true ->
            ok;
        false ->
            ?assertMatch({error, {not_alive, "partisan_ct needs this node alive" ++ _}},
                         partisan_ct:start_node(x, #{})),
            ?assertMatch({error, {not_alive, _}}, partisan_ct:start_cluster([x, y], #{}))
    end.
