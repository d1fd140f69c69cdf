-- Idempotency keys of /v1 creates. The first successful answer to a (user, key) is kept, so a
-- client that did not learn the outcome of a create (a timeout, a 503 from a commit whose
-- answer was lost) can retry it and get that answer again instead of a duplicate. A key row is
-- written in the same transaction as what it creates: both commit, or neither.
--
-- Keys are private to their user, even in organisation-wide transactions. There is no foreign
-- key to users: the global prompt layer is written in the '_platform' pseudo-organisation.
-- Expired rows are purged by the next keyed create of the same user (and never replayed).

CREATE TABLE idempotency_keys (
    org_id      text NOT NULL CHECK (org_id <> ''),
    user_id     text NOT NULL CHECK (user_id <> ''),
    key         text NOT NULL CHECK (key <> '' AND length(key) <= 255),
    fingerprint bytea NOT NULL CHECK (length(fingerprint) = 32),
    status      smallint NOT NULL CHECK (status BETWEEN 200 AND 299),
    location    text CHECK (length(location) <= 2048),
    body        text NOT NULL CHECK (length(body) <= 1048576),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (org_id, user_id, key),
    CHECK (expires_at > created_at)
);

-- The lazy purge deletes one user's expired keys.
CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (org_id, user_id, expires_at);

ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY idempotency_keys_owner ON idempotency_keys
    USING (
        org_id = (select nullif(current_setting('app.org_id', true), ''))
        AND user_id = (select nullif(current_setting('app.user_id', true), ''))
    )
    WITH CHECK (
        org_id = (select nullif(current_setting('app.org_id', true), ''))
        AND user_id = (select nullif(current_setting('app.user_id', true), ''))
    );

GRANT SELECT, INSERT, DELETE ON idempotency_keys TO gatehouse_app;
