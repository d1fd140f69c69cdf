-- Each user's connections to third-party providers, with their OAuth tokens encrypted by
-- mcp_server (oauth/vault.py): AES-256-GCM under key_id, associated data binding
-- (org_id, user_id, provider, key_id). Nothing here is a token in clear; account, scopes and
-- expires_at are descriptive copies of what the encrypted bundle holds.
--
-- version grows with every write of new tokens (connect, refresh) but not with key rotation,
-- so a refresh finishing after a reconnect cannot overwrite the newer tokens.
-- Rows are private to their user, visible organisation-wide only when the transaction says so
-- (app.org_wide = 'on'), exactly like sessions.

CREATE TABLE provider_connections (
    org_id          text NOT NULL CHECK (org_id <> ''),
    user_id         text NOT NULL CHECK (user_id <> ''),
    provider        text NOT NULL CHECK (provider <> '' AND length(provider) <= 64),
    account         text NOT NULL DEFAULT '' CHECK (length(account) <= 320),
    scopes          text[] NOT NULL DEFAULT '{}' CHECK (cardinality(scopes) <= 200),
    key_id          text NOT NULL CHECK (key_id ~ '^[A-Za-z0-9_.-]{1,32}$'),
    nonce           bytea NOT NULL CHECK (octet_length(nonce) = 12),
    ciphertext      bytea NOT NULL CHECK (octet_length(ciphertext) BETWEEN 17 AND 65536),
    expires_at      timestamptz,
    needs_reconnect boolean NOT NULL DEFAULT false,
    version         bigint NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, user_id, provider),
    FOREIGN KEY (org_id, user_id) REFERENCES users (org_id, id) ON DELETE CASCADE
);

-- Rotation walks the rows not yet under the active key.
CREATE INDEX provider_connections_key_idx ON provider_connections (key_id);

ALTER TABLE provider_connections ENABLE ROW LEVEL SECURITY;
ALTER TABLE provider_connections FORCE ROW LEVEL SECURITY;
CREATE POLICY provider_connections_tenant ON provider_connections
    USING (
        org_id = (select nullif(current_setting('app.org_id', true), ''))
        AND (user_id = (select nullif(current_setting('app.user_id', true), ''))
             OR (select current_setting('app.org_wide', true)) = 'on')
    )
    WITH CHECK (
        org_id = (select nullif(current_setting('app.org_id', true), ''))
        AND (user_id = (select nullif(current_setting('app.user_id', true), ''))
             OR (select current_setting('app.org_wide', true)) = 'on')
    );

GRANT SELECT, INSERT, UPDATE, DELETE ON provider_connections TO gatehouse_app;
