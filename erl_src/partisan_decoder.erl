%% @doc Decodes the received terms that the data plane's threads must not decode themselves.
%%
%% OTP 23.3.4.15+, 24.3.4.2+, 25.1+ and 26 crash the VM when a thread that is not a scheduler
%% decodes a map of more than 32 keys (erlang/otp#8208, fixed in OTP 27.3). A message that its
%% reader thread delivers itself (a stream's go through `partisan_delivery', on a scheduler
%% already) and that holds such a map comes here as a binary, is decoded on this process's
%% scheduler and sent on. The reader that handed it over waits for `partisan_nif:decoded/2', so
%% the messages of a connection keep their order.
-module(partisan_decoder).
-behaviour(gen_server).

-export([start_link/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

%% @doc Starts the registered decoder.
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @private
-spec init([]) -> {ok, map()}.
init([]) -> {ok, #{}}.

%% @private
-spec handle_call(term(), gen_server:from(), map()) -> {reply, term(), map()}.
handle_call(_, _From, S) -> {reply, {error, unknown_call}, S}.

%% @private
-spec handle_cast(term(), map()) -> {noreply, map()}.
handle_cast(_, S) -> {noreply, S}.

%% @private
-spec handle_info(term(), map()) -> {noreply, map()}.
handle_info({'$partisan_decode', Token, To, Wrap, Bin, Safe}, S) ->
    Outcome = case erlang:is_process_alive(To) of
                  false -> noproc;
                  true -> decode_and_send(To, Wrap, Bin, Safe)
              end,
    _ = partisan_nif:decoded(Token, Outcome),
    {noreply, S};
handle_info(_, S) ->
    {noreply, S}.

decode_and_send(To, Wrap, Bin, Safe) ->
    try binary_to_term(Bin, [safe || Safe]) of
        Term ->
            To ! case Wrap of
                     none -> Term;
                     {FromNode, Dest} -> {'$partisan_interpose', FromNode, Dest, Term}
                 end,
            delivered
    catch
        error:badarg -> undecodable
    end.
