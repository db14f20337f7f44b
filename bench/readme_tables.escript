#!/usr/bin/env escript
%% -*- erlang -*-
%%! -noshell
%%
%% Writes the README's performance tables from the newest benchmark reports, so the figures
%% users read are the ones a run measured, never copied by hand.
%%
%%   escript bench/readme_tables.escript [--check] README.md bench/results
%%
%% The README holds one block per table between `<!-- bench:NAME begin ... -->' and
%% `<!-- bench:NAME end -->'; each block is rebuilt from the newest report of its scenario
%% (`<scenario>-<date>-<time>.md' in the results directory; reports of variants such as
%% `latency-read_spin-...' are not taken) and names the report, the run's time and commit.
%% `make bench' ends with it; `make bench-readme' runs it alone. With `--check' nothing is
%% written: it exits 1, naming the blocks, when a block differs from what the newest reports
%% give (`make test' checks so: the README's tables are those of the reports in the tree).
-mode(compile).

main(["--check", Readme, Dir]) -> run(check, Readme, Dir);
main([Readme, Dir]) -> run(write, Readme, Dir);
main(_) ->
    io:format(standard_error, "usage: readme_tables.escript [--check] README.md RESULTS_DIR~n", []),
    halt(2).

run(Mode, Readme, Dir) ->
    {ok, Text} = file:read_file(Readme),
    try lists:foldl(fun({Name, Gen}, {Acc, Changed}) ->
                            New = unicode:characters_to_binary(Gen(Dir)),
                            {Acc1, Old} = replace_block(Acc, Name, New),
                            {Acc1, [Name || Old =/= New] ++ Changed}
                    end, {Text, []}, blocks()) of
        {_, []} ->
            io:format("README tables: up to date with the newest reports in ~ts~n", [Dir]);
        {NewText, Changed} when Mode =:= write ->
            ok = file:write_file(Readme, NewText),
            io:format("README tables rewritten: ~ts~n", [lists:join(", ", lists:reverse(Changed))]);
        {_, Changed} ->
            io:format(standard_error,
                      "README tables differ from the newest reports in ~ts: ~ts~n"
                      "Run `make bench-readme` (or remove the newer reports) and commit the README.~n",
                      [Dir, lists:join(", ", lists:reverse(Changed))]),
            halt(1)
    catch
        throw:{missing, What} ->
            io:format(standard_error, "readme_tables: ~ts~n", [What]),
            halt(2)
    end.

blocks() ->
    [{"throughput", fun(D) -> throughput(D, "throughput") end},
     {"throughput-sbwt-none", fun(D) -> throughput(D, "throughput-sbwt-none") end},
     {"cpu", fun cpu/1},
     {"loopback", fun(D) -> copied(D, "throughput", "## 1 MiB against the loopback limit") end},
     {"latency", fun(D) -> copied(D, "latency", "## Round trip") end},
     {"hol", fun(D) -> copied(D, "hol", "## Round trip") end},
     {"tls", fun(D) -> copied(D, "tls", "| case ") end},
     {"echo", fun(D) -> copied(D, "echo", "## Echo") end},
     {"join", fun(D) -> copied(D, "join", "## Time to") end},
     {"call", fun(D) -> copied(D, "call", ["## Calls/s", "## partisan / disterl"]) end},
     {"call-hyparview", fun(D) -> copied(D, "call-hyparview", "## Calls/s") end},
     {"compression", fun(D) -> copied(D, "compression", "| channel ") end}].

%% -- blocks -------------------------------------------------------------------------------------

%% Messages per second per case, condensed from the report's throughput table.
throughput(Dir, Scenario) ->
    {File, Lines} = newest(Dir, Scenario),
    {Transports, Cases} = throughput_cases(Lines, File),
    Out = [[Payload, Senders | [first_word(V) || {_, V} <- Rates]]
           ++ [ratio(number(proplists:get_value(Best, Rates))
                     / number(proplists:get_value("disterl", Rates)), higher)]
           || #{payload := Payload, senders := Senders, rates := Rates, best := Best} <- Cases],
    [source(Dir, File, Lines),
     md_table(["payload", "senders" | Transports] ++ ["best partisan / disterl"],
              "|---|---:|" ++ lists:append(["---:|" || _ <- Transports]) ++ "---:|", Out)].

%% CPU time of both nodes per delivered message, from the throughput reports' diagnostics: the
%% faster plain partisan configuration of each case against disterl.
cpu(Dir) ->
    Parts = [cpu_of(Dir, S) || S <- ["throughput", "throughput-sbwt-none"]],
    Cases = [C || {C, _} <- element(3, hd(Parts))],
    Rows = [[C | lists:append([begin
                                   {P, Label, D} = proplists:get_value(C, PerCase),
                                   [io_lib:format("~ts (~ts)", [P, Label]), D,
                                    ratio(number(P) / number(D), lower)]
                               end || {_, _, PerCase} <- Parts])]
            || C <- Cases],
    [[Src || {Src, _, _} <- Parts],
     md_table(["case", "partisan, default flags", "disterl", "partisan / disterl",
               "partisan, `+sbwt none`", "disterl", "partisan / disterl"],
              "|---|---:|---:|---:|---:|---:|---:|", Rows)].

cpu_of(Dir, Scenario) ->
    {File, Lines} = newest(Dir, Scenario),
    {_, Cases} = throughput_cases(Lines, File),
    {DH, DRows} = table(Lines, "## Diagnostics", File),
    Cpu = maps:from_list([{{cell(R, col(DH, "case")), cell(R, col(DH, "transport"))},
                           cell(R, col(DH, "CPU µs/msg (A+B)"))} || R <- DRows]),
    PerCase = [begin
                   Case = Payload ++ " x" ++ Senders,
                   Found = fun(T) -> case maps:find({Case, T}, Cpu) of
                                         {ok, V} -> V;
                                         error -> throw({missing, io_lib:format("no CPU figure for ~ts, ~ts in ~ts", [Case, T, File])})
                                     end end,
                   {Case, {Found(Best), string:prefix(Best, "partisan "), Found("disterl")}}
               end || #{payload := Payload, senders := Senders, best := Best} <- Cases],
    {source(Dir, File, Lines), File, PerCase}.

%% The throughput table of a report: its transports (the `<transport> msg/s' columns) and, per
%% case, the payload, the senders, each transport's cell and the fastest plain partisan one.
throughput_cases(Lines, File) ->
    {Header, Rows} = table(Lines, "## Throughput", File),
    Cols = rate_columns(Header),
    {[T || {T, _} <- Cols],
     [begin
          Rates = [{T, cell(Row, I)} || {T, I} <- Cols],
          #{payload => cell(Row, col(Header, "payload")), senders => cell(Row, col(Header, "senders")),
            rates => Rates, best => best_partisan(Rates)}
      end || Row <- Rows]}.

%% A report's own table, as it is, under the line that starts with `Heading' (or its tables
%% under each of a list of headings, one after the other).
copied(Dir, Scenario, [H | _] = Headings) when is_list(H) ->
    {File, Lines} = newest(Dir, Scenario),
    [source(Dir, File, Lines),
     lists:join("\n", [[[L, $\n] || L <- table_lines(Lines, Heading, File)] || Heading <- Headings])];
copied(Dir, Scenario, Heading) ->
    copied(Dir, Scenario, [Heading]).

%% -- reports ------------------------------------------------------------------------------------

%% The newest `<Scenario>-YYYY-MM-DD-HHMMSS.md' of `Dir' and its lines.
newest(Dir, Scenario) ->
    {ok, Names} = file:list_dir(Dir),
    Re = "^" ++ Scenario ++ "-[0-9]{4}-[0-9]{2}-[0-9]{2}-[0-9]{6}\\.md$",
    case lists:reverse(lists:sort([N || N <- Names, re:run(N, Re) =/= nomatch])) of
        [File | _] -> {File, read_lines(filename:join(Dir, File))};
        [] -> throw({missing, io_lib:format("no ~ts report in ~ts", [Scenario, Dir])})
    end.

read_lines(Path) ->
    {ok, Bin} = file:read_file(Path),
    string:split(unicode:characters_to_list(Bin), "\n", all).

%% "From `bench/results/F' (run at T, commit C)." The run and build lines are in the report, or
%% for a summary of two runs (TLS) in its first run's report.
source(Dir, File, Lines) ->
    Sibling = filename:join(Dir, filename:rootname(File) ++ "-tls-run.md"),
    Where = case {run_start(Lines), filelib:is_regular(Sibling)} of
                {undefined, true} -> read_lines(Sibling);
                _ -> Lines
            end,
    io_lib:format("From `bench/results/~ts` (run ~ts, commit ~ts).~n~n",
                  [File, run_start(Where), commit(Where)]).

run_start(Lines) ->
    case [L || L <- Lines, string:prefix(L, "Run: ") =/= nomatch] of
        [L | _] -> hd(string:lexemes(string:prefix(L, "Run: "), " "));
        [] -> undefined
    end.

commit(Lines) ->
    case [L || L <- Lines, string:prefix(L, "- build: commit ") =/= nomatch] of
        [L | _] ->
            [C | Rest] = string:lexemes(string:prefix(L, "- build: commit "), " "),
            case Rest of
                ["(0" | _] -> C;
                [[$( | N] | _] -> C ++ " with " ++ N ++ " modified file(s)";
                _ -> C
            end;
        [] -> "unknown"
    end.

%% The first table (lines starting with `|') after the line that starts with `Heading'.
table_lines(Lines, Heading, File) ->
    case lists:dropwhile(fun(L) -> string:prefix(L, Heading) =:= nomatch end, Lines) of
        [] -> throw({missing, io_lib:format("no '~ts' in ~ts", [Heading, File])});
        [First | After] ->
            From = case string:prefix(First, "|") of nomatch -> After; _ -> [First | After] end,
            Table = lists:takewhile(fun(L) -> string:prefix(L, "|") =/= nomatch end,
                                    lists:dropwhile(fun(L) -> string:prefix(L, "|") =:= nomatch end, From)),
            Table =/= [] orelse throw({missing, io_lib:format("no table after '~ts' in ~ts", [Heading, File])}),
            Table
    end.

%% Header cells and data rows (cells) of the table after `Heading'.
table(Lines, Heading, File) ->
    [Header, _Separator | Rows] = table_lines(Lines, Heading, File),
    {cells(Header), [cells(R) || R <- Rows]}.

cells(Line) ->
    [string:trim(C) || C <- lists:droplast(tl(string:split(Line, "|", all)))].

col(Header, Name) ->
    case [I || {I, H} <- lists:zip(lists:seq(1, length(Header)), Header), H =:= Name] of
        [I | _] -> I;
        [] -> throw({missing, io_lib:format("no column '~ts'", [Name])})
    end.

cell(Row, I) -> lists:nth(I, Row).

%% The `<transport> msg/s' columns: [{Transport, Index}].
rate_columns(Header) ->
    [{string:trim(string:slice(H, 0, length(H) - length(" msg/s"))), I}
     || {I, H} <- lists:zip(lists:seq(1, length(Header)), Header),
        lists:suffix(" msg/s", H)].

%% The plain (no `ack') partisan configuration with the highest rate.
best_partisan(Rates) ->
    Plain = [{number(V), T} || {T, V} <- Rates, string:prefix(T, "partisan P=") =/= nomatch],
    element(2, lists:max(Plain)).

first_word(Cell) -> hd(string:lexemes(Cell, " ")).

number(Cell) ->
    S = [C || C <- first_word(Cell), C =/= $,],
    try list_to_float(S) catch error:badarg -> float(list_to_integer(S)) end.

%% A ratio, in bold when partisan does better (`higher': a rate; `lower': a cost).
ratio(R, Better) ->
    Text = io_lib:format("~.2f×", [R]),
    case (Better =:= higher andalso R >= 1.0) orelse (Better =:= lower andalso R =< 1.0) of
        true -> ["**", Text, "**"];
        false -> Text
    end.

md_table(Header, Separator, Rows) ->
    [row(Header), Separator, $\n | [row(R) || R <- Rows]].

row(Cells) -> ["| ", lists:join(" | ", Cells), " |\n"].

%% -- the README ---------------------------------------------------------------------------------

%% `Text' with block `Name' holding `New'; also the block's old content.
replace_block(Text, Name, New) ->
    Begin = iolist_to_binary(["<!-- bench:", Name, " begin"]),
    End = iolist_to_binary(["<!-- bench:", Name, " end -->"]),
    case binary:split(Text, Begin) of
        [Before, Rest0] ->
            [BeginTail, Rest1] = binary:split(Rest0, <<"-->\n">>),
            case binary:split(Rest1, End) of
                [Old, After] ->
                    {<<Before/binary, Begin/binary, BeginTail/binary, "-->\n", New/binary,
                       End/binary, After/binary>>, Old};
                _ -> throw({missing, io_lib:format("README: no '~ts'", [End])})
            end;
        _ ->
            throw({missing, io_lib:format("README: no '~ts ...' block", [Begin])})
    end.
