%% Partisan v5's interposition API on a peer service manager module (so that
%% `(partisan_peer_service:manager()):add_interposition_fun(Name, Fun)' works whatever the
%% manager). Each function is `partisan_interposition''s, which documents them.
-export([add_pre_interposition_fun/2, add_interposition_fun/2, add_post_interposition_fun/2,
         remove_pre_interposition_fun/1, remove_interposition_fun/1,
         remove_post_interposition_fun/1, get_pre_interposition_funs/0,
         get_interposition_funs/0, get_post_interposition_funs/0]).

%% @doc Installs a pre-interposition fun (see `partisan_interposition').
-spec add_pre_interposition_fun(term(), fun((tuple()) -> term())) -> ok | {error, term()}.
add_pre_interposition_fun(Name, Fun) -> partisan_interposition:add_pre_interposition_fun(Name, Fun).

%% @doc Installs an interposition fun (see `partisan_interposition').
-spec add_interposition_fun(term(), fun((tuple()) -> term())) -> ok | {error, term()}.
add_interposition_fun(Name, Fun) -> partisan_interposition:add_interposition_fun(Name, Fun).

%% @doc Installs a post-interposition fun (see `partisan_interposition').
-spec add_post_interposition_fun(term(), fun((tuple()) -> term())) -> ok | {error, term()}.
add_post_interposition_fun(Name, Fun) -> partisan_interposition:add_post_interposition_fun(Name, Fun).

%% @doc Removes a pre-interposition fun.
-spec remove_pre_interposition_fun(term()) -> ok | {error, term()}.
remove_pre_interposition_fun(Name) -> partisan_interposition:remove_pre_interposition_fun(Name).

%% @doc Removes an interposition fun.
-spec remove_interposition_fun(term()) -> ok | {error, term()}.
remove_interposition_fun(Name) -> partisan_interposition:remove_interposition_fun(Name).

%% @doc Removes a post-interposition fun.
-spec remove_post_interposition_fun(term()) -> ok | {error, term()}.
remove_post_interposition_fun(Name) -> partisan_interposition:remove_post_interposition_fun(Name).

%% @doc The installed pre-interposition funs, by name.
-spec get_pre_interposition_funs() -> {ok, #{term() => function()}}.
get_pre_interposition_funs() -> partisan_interposition:get_pre_interposition_funs().

%% @doc The installed interposition funs, by name.
-spec get_interposition_funs() -> {ok, #{term() => function()}}.
get_interposition_funs() -> partisan_interposition:get_interposition_funs().

%% @doc The installed post-interposition funs, by name.
-spec get_post_interposition_funs() -> {ok, #{term() => function()}}.
get_post_interposition_funs() -> partisan_interposition:get_post_interposition_funs().
