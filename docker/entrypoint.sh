#!/bin/sh
# Compose mounts secrets as files under /run/secrets; settings come from the environment.
# A file whose name is an environment variable's (upper case, e.g. GATEHOUSE_TOKEN_KEYS,
# PGPASSWORD, APP_DB_PASSWORD) becomes that variable, so no secret is written into the compose
# file or the image. Key files (lower-case names) are read by path, e.g. through
# GATEHOUSE_INTERNAL_KEY_FILE. Kubernetes sets such variables from Secrets directly.
set -eu
secrets_dir=${GATEHOUSE_SECRETS_DIR:-/run/secrets}
if [ -d "$secrets_dir" ]; then
    for file in "$secrets_dir"/*; do
        name=$(basename "$file")
        case "$name" in
            *[!A-Z0-9_]* | [0-9]*) continue ;;
        esac
        [ -f "$file" ] || continue
        value=$(cat "$file")
        export "$name=$value"
    done
fi
exec "$@"
