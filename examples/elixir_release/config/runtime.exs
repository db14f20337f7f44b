import Config

# Read when the release boots (and by `mix run`), so one build serves every instance: each one
# gets its listen address and the addresses of the others from the environment.
#
#   PARTISAN_IP     the address to listen on (default 127.0.0.1)
#   PARTISAN_PORT   the port to listen on (default 9100)
#   PARTISAN_PEERS  the other instances, "name@host:port" separated by commas or spaces
#
# The instances find each other with Partisan's peer discovery (the list backend): no join
# call in the code, and an instance that starts later, or restarts, is joined when it answers.
config :partisan,
  listen_ip: System.get_env("PARTISAN_IP", "127.0.0.1") |> String.to_charlist(),
  listen_port: System.get_env("PARTISAN_PORT", "9100") |> String.to_integer(),
  channels: %{data: %{parallelism: 2}},
  peer_discovery: %{
    enabled: true,
    type: :partisan_peer_discovery_list,
    initial_delay: 0,
    polling_interval: 5_000,
    config: %{addresses: System.get_env("PARTISAN_PEERS", "") |> String.split([",", " "], trim: true)}
  }
