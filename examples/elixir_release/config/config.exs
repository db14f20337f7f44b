import Config

# Partisan's own debug lines (membership changes) are for debugging.
config :logger, level: :info
