#!/bin/sh
# Creates the secrets docker/compose.yaml mounts, once, under docker/secrets/ (never committed):
#   postgres_password      the PostgreSQL superuser's password (postgres and the migration only)
#   app_db_password        the gatehouse_app login role's password (migration, gateways, mcp_servers)
#   internal_assertion.pem the gateway's Ed25519 signing key for internal assertions (gateways only)
#   internal_assertion.pub its public key (mcp_servers only)
#   token_keys             the token vault's keyring, "k1:<base64 of 32 bytes>" (mcp_servers only)
# Needs openssl. Existing files are kept, so re-running it never rotates a key.
set -eu
dir=${1:-$(dirname "$0")/secrets}
mkdir -p "$dir"
chmod 0700 "$dir"  # only you on this host; the files inside are readable by the container user
cd "$dir"
random() { openssl rand -base64 "$1" | tr -d '\n'; }
[ -s postgres_password ] || random 24 > postgres_password
[ -s app_db_password ] || random 24 > app_db_password
[ -s token_keys ] || printf 'k1:%s' "$(random 32)" > token_keys
if [ ! -s internal_assertion.pem ]; then
    openssl genpkey -algorithm ed25519 -out internal_assertion.pem
    rm -f internal_assertion.pub
fi
[ -s internal_assertion.pub ] || openssl pkey -in internal_assertion.pem -pubout -out internal_assertion.pub
# Compose bind-mounts these files as they are; the containers run as uid 10001.
chmod 0644 postgres_password app_db_password token_keys internal_assertion.pem internal_assertion.pub
echo "secrets in $(pwd)"
