-- Sessions (user-private within an organisation) and the tamper-evident audit log.
--
-- User-private rows are visible to their owner, and to the whole organisation only when the
-- transaction says so (app.org_wide = 'on', set for callers holding an org-wide permission).

CREATE TABLE sessions (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id        text NOT NULL CHECK (org_id <> ''),
    user_id       text NOT NULL CHECK (user_id <> ''),
    name          text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    allowed_tools text[] CHECK (cardinality(allowed_tools) <= 200),
    variables     jsonb NOT NULL DEFAULT '{}'
                  CHECK (jsonb_typeof(variables) = 'object' AND pg_column_size(variables) <= 65536),
    metadata      jsonb NOT NULL DEFAULT '{}'
                  CHECK (jsonb_typeof(metadata) = 'object' AND pg_column_size(metadata) <= 16384),
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'closed')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    closed_at     timestamptz,
    FOREIGN KEY (org_id, user_id) REFERENCES users (org_id, id) ON DELETE CASCADE
);

-- Listing walks (created_at, id) backwards per user or per organisation; lookups by id are
-- always qualified by org_id as well, so the primary key alone serves them.
CREATE INDEX sessions_org_user_created_idx ON sessions (org_id, user_id, created_at DESC, id DESC);
CREATE INDEX sessions_org_created_idx ON sessions (org_id, created_at DESC, id DESC);
CREATE INDEX sessions_active_idx ON sessions (org_id, user_id) WHERE status = 'active';

ALTER TABLE sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY sessions_tenant ON sessions
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

GRANT SELECT, INSERT, UPDATE ON sessions TO gatehouse_app;


-- The audit log: append-only for the application, each row chained to the previous row of its
-- organisation by SHA-256, so editing or deleting a row (even as the owner) is detectable.

CREATE TABLE audit_log (
    org_id      text NOT NULL CHECK (org_id <> ''),
    seq         bigint NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL DEFAULT '',
    event       text NOT NULL CHECK (event <> '' AND length(event) <= 64),
    target      text NOT NULL DEFAULT '',
    outcome     text NOT NULL CHECK (outcome IN ('success', 'failure', 'denied', 'error')),
    details     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object'),
    request_id  text NOT NULL DEFAULT '',
    prev_hash   bytea NOT NULL,
    hash        bytea NOT NULL,
    PRIMARY KEY (org_id, seq)
);
CREATE INDEX audit_log_org_time_idx ON audit_log (org_id, occurred_at DESC, seq DESC);

-- One definition of a row's hash, used when appending and when verifying.
CREATE FUNCTION audit_row_hash(prev bytea, r audit_log) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(prev || convert_to(concat_ws(E'\x1f',
        r.org_id, r.seq::text, to_char(r.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
        r.actor, r.event, r.target, r.outcome, r.details::text, r.request_id), 'UTF8'))
$$;

CREATE FUNCTION audit_log_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    last audit_log%ROWTYPE;
BEGIN
    -- Appends to one organisation's chain are serialised; other organisations are unaffected.
    PERFORM pg_advisory_xact_lock(hashtextextended('gatehouse.audit:' || NEW.org_id, 0));
    SELECT * INTO last FROM audit_log WHERE org_id = NEW.org_id ORDER BY seq DESC LIMIT 1;
    NEW.seq := COALESCE(last.seq, 0) + 1;
    NEW.prev_hash := COALESCE(last.hash, '\x'::bytea);
    NEW.hash := audit_row_hash(NEW.prev_hash, NEW);
    RETURN NEW;
END
$$;

CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_chain();

CREATE FUNCTION audit_log_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_immutable BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_immutable();

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_log_tenant ON audit_log
    USING (org_id = (select nullif(current_setting('app.org_id', true), '')))
    WITH CHECK (org_id = (select nullif(current_setting('app.org_id', true), '')));

GRANT SELECT, INSERT ON audit_log TO gatehouse_app;
