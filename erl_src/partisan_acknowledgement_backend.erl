%% @doc Partisan v5's acknowledgement backend, where the data plane keeps it.
%%
%% In v5 this process stored every message sent with `ack' until its acknowledgement came, for
%% the manager to retransmit. Here the Rust data plane numbers, keeps, retransmits and
%% acknowledges them itself (see the README, `ack'), so there is no such process, and v5's
%% `start_link/0', `store/2' and `ack/1' (which only the v5 manager called) have nothing to do
%% and are not provided. What a v5 user can still ask is how much is outstanding.
-module(partisan_acknowledgement_backend).

-export([outstanding/0]).

%% @doc How many messages sent with `ack' (or `retransmission') this node holds unacknowledged
%% now, over every destination: `{ok, Count}' (the `unacked_messages' gauge of
%% `partisan:stats/0'; `{ok, 0}' when partisan is not running). v5 returned the messages
%% themselves; the data plane holds them encoded, in Rust, so the count is what can be given.
-spec outstanding() -> {ok, non_neg_integer()}.
outstanding() ->
    try partisan_nif:stats() of
        Stats -> {ok, maps:get(unacked_messages, Stats, 0)}
    catch
        error:{nif_not_loaded, _} -> {ok, 0}
    end.
