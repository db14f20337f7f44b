# The test VM controls peers over Distributed Erlang; partisan traffic between the peers goes
# over the Rust data plane only (peers start with -connect_all false).
{_, 0} = System.cmd("epmd", ["-daemon"])
{:ok, _} = :net_kernel.start([:"mixtest@127.0.0.1", :longnames])
ExUnit.start()
