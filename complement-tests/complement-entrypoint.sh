#!/bin/sh
# Writes a configuration for Complement's environment and starts the server.
set -eu
mkdir -p /data
cat > /data/homeserver.toml <<CONF
[global]
server_name = "${SERVER_NAME:-localhost}"
address = "0.0.0.0"
port = 8008
database_path = "/data/db"
allow_registration = true
registration_shared_secret = "complement"

[global.rate_limits.login]
per_second = 1000.0
burst = 10000

[global.rate_limits.registration]
per_second = 1000.0
burst = 10000

[global.rate_limits.message]
per_second = 100000.0
burst = 100000
CONF
exec palisade --config /data/homeserver.toml
