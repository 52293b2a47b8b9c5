#!/bin/sh
# Writes a configuration for Complement's environment and starts the server.
set -eu
mkdir -p /data
name="${SERVER_NAME:-localhost}"

# Federation over TLS with a certificate from Complement's CA, which is also the only
# extra CA trusted for outgoing requests.
federation=""
if [ -f /complement/ca/ca.crt ] && [ -f /complement/ca/ca.key ]; then
    host="${name%%:*}"
    openssl req -new -newkey rsa:2048 -nodes -subj "/CN=$host" \
        -keyout /data/tls.key -out /data/tls.csr 2>/dev/null
    printf 'subjectAltName=DNS:%s\n' "$host" > /data/tls.ext
    openssl x509 -req -in /data/tls.csr -CA /complement/ca/ca.crt -CAkey /complement/ca/ca.key \
        -CAcreateserial -days 2 -extfile /data/tls.ext -out /data/tls.crt 2>/dev/null
    federation="
[global.federation]
enabled = true
address = \"0.0.0.0\"
port = 8448
tls_certificate = \"/data/tls.crt\"
tls_private_key = \"/data/tls.key\"
trusted_ca_files = [\"/complement/ca/ca.crt\"]
"
fi
cat > /data/homeserver.toml <<CONF
[global]
server_name = "$name"
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
$federation
CONF
exec palisade --config /data/homeserver.toml
