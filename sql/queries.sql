-- Named queries. Each starts with a "-- name: NAME" line; the text up to the next one is the query.

-- name: provision_principal
-- Creates the organisation and the user on first sight, seeding the user's memberships from
-- the token's roles; afterwards memberships are the source of truth. Returns whether the user
-- was created now; if not, read the roles with roles_of, in a statement of its own: a
-- concurrent first request may have seeded them after this statement's snapshot was taken.
WITH org AS (
    INSERT INTO organizations (id) VALUES ($1) ON CONFLICT (id) DO NOTHING
), usr AS (
    INSERT INTO users (org_id, id) VALUES ($1, $2) ON CONFLICT (org_id, id) DO NOTHING
    RETURNING id
), seeded AS (
    INSERT INTO memberships (org_id, user_id, role)
    SELECT $1, $2, role FROM unnest($3::text[]) AS role
    WHERE EXISTS (SELECT 1 FROM usr)
    ON CONFLICT (org_id, user_id, role) DO NOTHING
)
SELECT EXISTS (SELECT 1 FROM usr);

-- name: roles_of
SELECT coalesce(array_agg(role ORDER BY role), '{}') FROM memberships
WHERE org_id = $1 AND user_id = $2;

-- name: get_session
SELECT * FROM sessions WHERE org_id = $1 AND id = $2;

-- name: list_sessions
-- $3: only this user's sessions (NULL for all visible); $4: status filter (NULL for any);
-- ($5, $6): the cursor, the last (created_at, id) already returned.
SELECT * FROM sessions
WHERE org_id = $1
  AND ($3::text IS NULL OR user_id = $3)
  AND ($4::text IS NULL
       OR ($4 = 'active' AND status = 'active' AND expires_at > now())
       OR ($4 = 'expired' AND status = 'active' AND expires_at <= now())
       OR ($4 = 'closed' AND status = 'closed'))
  AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $2;

-- name: update_session
-- NULL leaves a field as it is; $8 replaces allowed_tools when $7 is true, $10 the prompt
-- when $9 is.
UPDATE sessions SET
    name = coalesce($3, name),
    variables = coalesce($4, variables),
    metadata = coalesce($5, metadata),
    expires_at = coalesce(now() + make_interval(secs => $6), expires_at),
    allowed_tools = CASE WHEN $7 THEN $8 ELSE allowed_tools END,
    prompt = CASE WHEN $9 THEN $10 ELSE prompt END
WHERE org_id = $1 AND id = $2 AND status = 'active' AND expires_at > now()
RETURNING *;

-- name: close_session
UPDATE sessions SET status = 'closed', closed_at = now()
WHERE org_id = $1 AND id = $2 AND status = 'active'
RETURNING *;

-- name: touch_sessions
-- Records last use for a batch of sessions; never moves last_used_at backwards.
UPDATE sessions AS s SET last_used_at = greatest(s.last_used_at, t.used_at)
FROM unnest($2::uuid[], $3::timestamptz[]) AS t (id, used_at)
WHERE s.org_id = $1 AND s.id = t.id;

-- name: append_audit
INSERT INTO audit_log (org_id, actor, event, target, outcome, details, request_id, prev_hash, hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, '\x', '\x');

-- name: list_audit
SELECT org_id, seq, occurred_at, actor, event, target, outcome, details, request_id
FROM audit_log
WHERE org_id = $1
  AND ($3::text IS NULL OR event = $3)
  AND ($4::text IS NULL OR actor = $4)
  AND ($5::bigint IS NULL OR seq < $5)
ORDER BY seq DESC
LIMIT $2;

-- name: verify_audit_chain
-- Every row whose stored links disagree with a recomputation (by the row's chain version; a
-- chain never goes back to an older version), first break first per org.
SELECT org_id, seq FROM (
    SELECT a.org_id, a.seq, a.prev_hash, a.hash, a.chain_version,
           lag(a.hash, 1, '\x'::bytea) OVER w AS expected_prev,
           lag(a.seq, 1, 0::bigint) OVER w AS previous_seq,
           lag(a.chain_version, 1, 1::smallint) OVER w AS previous_version,
           audit_row_hash_versioned(a.prev_hash, a) AS recomputed
    FROM audit_log a
    WINDOW w AS (PARTITION BY a.org_id ORDER BY a.seq)
) chain
WHERE prev_hash <> expected_prev OR hash IS DISTINCT FROM recomputed
   OR seq <> previous_seq + 1 OR chain_version < previous_version
ORDER BY org_id, seq;

-- name: list_members
SELECT u.id AS user_id, coalesce(array_agg(m.role ORDER BY m.role)
       FILTER (WHERE m.role IS NOT NULL), '{}') AS roles
FROM users u LEFT JOIN memberships m ON m.org_id = u.org_id AND m.user_id = u.id
WHERE u.org_id = $1
GROUP BY u.id ORDER BY u.id
LIMIT 1000;

-- name: member_exists
SELECT EXISTS (SELECT 1 FROM users WHERE org_id = $1 AND id = $2);

-- name: replace_roles
WITH gone AS (
    DELETE FROM memberships WHERE org_id = $1 AND user_id = $2 AND NOT (role = ANY($3::text[]))
)
INSERT INTO memberships (org_id, user_id, role)
SELECT $1, $2, role FROM unnest($3::text[]) AS role
ON CONFLICT (org_id, user_id, role) DO NOTHING;

-- name: owner_count
SELECT count(*) FROM memberships WHERE org_id = $1 AND role = 'owner';

-- name: upsert_connection
-- A (re)connect: new tokens, clears needs_reconnect, bumps version.
INSERT INTO provider_connections
    (org_id, user_id, provider, account, scopes, key_id, nonce, ciphertext, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (org_id, user_id, provider) DO UPDATE SET
    account = EXCLUDED.account, scopes = EXCLUDED.scopes, key_id = EXCLUDED.key_id,
    nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext, expires_at = EXCLUDED.expires_at,
    needs_reconnect = false, version = provider_connections.version + 1, updated_at = now()
RETURNING version;

-- name: get_connection
SELECT org_id, user_id, provider, account, scopes, key_id, nonce, ciphertext, expires_at,
       needs_reconnect, version, created_at, updated_at
FROM provider_connections WHERE org_id = $1 AND user_id = $2 AND provider = $3;

-- name: replace_connection_tokens
-- A refresh: only if nobody wrote newer tokens since version $4 was read (never resurrects a
-- deleted connection).
UPDATE provider_connections SET
    scopes = $5, key_id = $6, nonce = $7, ciphertext = $8, expires_at = $9,
    version = version + 1, updated_at = now()
WHERE org_id = $1 AND user_id = $2 AND provider = $3 AND version = $4
  AND NOT needs_reconnect
RETURNING version;

-- name: mark_connection_needs_reconnect
-- $4: the version whose refresh token was refused (NULL: whatever is stored).
UPDATE provider_connections SET needs_reconnect = true, updated_at = now()
WHERE org_id = $1 AND user_id = $2 AND provider = $3 AND ($4::bigint IS NULL OR version = $4)
RETURNING version;

-- name: delete_connection
DELETE FROM provider_connections WHERE org_id = $1 AND user_id = $2 AND provider = $3
RETURNING version;

-- name: count_connections_to_rotate
-- Rotation runs as a role that bypasses row-level security (it must see every organisation).
SELECT count(*) FROM provider_connections WHERE key_id <> $1;

-- name: list_connections_to_rotate
-- Keyset pagination over the primary key: ($2, $3, $4) is the last row of the previous batch
-- (NULLs for the first batch); $5 the batch size.
SELECT org_id, user_id, provider, key_id, nonce, ciphertext FROM provider_connections
WHERE key_id <> $1
  AND ($2::text IS NULL OR (org_id, user_id, provider) > ($2, $3::text, $4::text))
ORDER BY org_id, user_id, provider
LIMIT $5;

-- name: rotate_connection_key
-- Only if the row still holds exactly the ciphertext that was re-encrypted (same key id and
-- nonce): a concurrent refresh or an earlier run wins, so rotation is resumable and idempotent.
UPDATE provider_connections SET key_id = $6, nonce = $7, ciphertext = $8
WHERE org_id = $1 AND user_id = $2 AND provider = $3 AND key_id = $4 AND nonce = $5
RETURNING true;

-- name: current_prompt_layers
-- The newest version of the global, organisation and user layers that apply to a user.
SELECT DISTINCT ON (kind) kind, org_id, owner_id, version, source
FROM prompt_layers
WHERE (org_id = '_platform' AND kind = 'global' AND owner_id = '')
   OR (org_id = $1 AND kind = 'organization' AND owner_id = '')
   OR (org_id = $1 AND kind = 'user' AND owner_id = $2)
ORDER BY kind, version DESC;

-- name: lock_prompt_layer
SELECT pg_advisory_xact_lock(hashtextextended('gatehouse.prompt:' || $1 || '/' || $2 || '/' || $3, 0));

-- name: insert_prompt_version
INSERT INTO prompt_layers (org_id, kind, owner_id, version, source, note, author)
SELECT $1, $2, $3, coalesce(max(version), 0) + 1, $4, $5, $6
FROM prompt_layers WHERE org_id = $1 AND kind = $2 AND owner_id = $3
RETURNING version, source, note, author, created_at;

-- name: get_prompt_version
-- $4: the version, or NULL for the newest.
SELECT version, source, note, author, created_at FROM prompt_layers
WHERE org_id = $1 AND kind = $2 AND owner_id = $3 AND ($4::integer IS NULL OR version = $4)
ORDER BY version DESC LIMIT 1;

-- name: list_prompt_versions
SELECT version, note, author, created_at, length(source) AS size FROM prompt_layers
WHERE org_id = $1 AND kind = $2 AND owner_id = $3
ORDER BY version DESC LIMIT $4;

-- name: lock_idempotency_key
-- Held until the transaction ends: a second request with the same key while the first runs
-- finds it taken. The tuple is JSON-encoded so no two (org, user, key) share a lock.
SELECT pg_try_advisory_xact_lock(
    hashtextextended('gatehouse.idempotency:' || jsonb_build_array($1::text, $2::text, $3::text)::text, 0));

-- name: get_idempotency_key
-- Also purges the user's expired keys; the snapshot still shows them, hence the filter.
WITH purged AS (
    DELETE FROM idempotency_keys WHERE org_id = $1 AND user_id = $2 AND expires_at <= now()
)
SELECT fingerprint, status, location, body FROM idempotency_keys
WHERE org_id = $1 AND user_id = $2 AND key = $3 AND expires_at > now();

-- name: insert_idempotency_key
INSERT INTO idempotency_keys (org_id, user_id, key, fingerprint, status, location, body,
                              expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8));

-- name: create_session
-- The whole create in one round trip (migration 0007): the organisation's creation lock, the
-- caps check ($8 per user, $9 per organisation; SQLSTATE GH001 when reached), the insert for
-- the transaction's tenant and the audit row ($10-$16, append_audit's values).
SELECT * FROM gatehouse_create_session($1, $2, $3, $4, $5, $6, $7, $8, $9,
                                       $10, $11, $12, $13, $14, $15, $16);
