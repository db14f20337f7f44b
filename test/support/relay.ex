defmodule Partisan.TestRelay do
  @moduledoc "Runs on peer nodes in ExUnit tests: forwards the first message it receives."

  @doc "Waits for one message and forwards it, tagged, to `to` (over Distributed Erlang)."
  def relay(to) do
    receive do
      msg -> send(to, {:relayed, node(), msg})
    end
  end
end
