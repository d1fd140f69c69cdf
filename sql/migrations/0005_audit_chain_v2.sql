-- Audit chain version 2: an unambiguous hash input.
--
-- Version 1 (migration 0002) hashed the fields joined by U+001F, a character callers can put in
-- a tool name, so two different rows could present the same input. Version 2 hashes the
-- concatenation of each field's own SHA-256: every part has a fixed length, so distinct field
-- tuples never give the same input. Existing rows keep version 1 and still verify with the old
-- function; every new row is version 2 (the trigger decides, not the inserting role), and a
-- chain never goes back from 2 to 1 (the verify query checks that).

ALTER TABLE audit_log ADD COLUMN chain_version smallint NOT NULL DEFAULT 1
    CONSTRAINT audit_log_chain_version_check CHECK (chain_version IN (1, 2));
ALTER TABLE audit_log ALTER COLUMN chain_version SET DEFAULT 2;

CREATE FUNCTION audit_field_digest(value text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT sha256(convert_to(value, 'UTF8'))
$$;

CREATE FUNCTION audit_row_hash_v2(prev bytea, r audit_log) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256('\x02'::bytea || sha256(prev)
        || audit_field_digest(r.org_id)
        || audit_field_digest(r.seq::text)
        || audit_field_digest(to_char(r.occurred_at AT TIME ZONE 'UTC',
                                      'YYYY-MM-DD"T"HH24:MI:SS.US'))
        || audit_field_digest(r.actor)
        || audit_field_digest(r.event)
        || audit_field_digest(r.target)
        || audit_field_digest(r.outcome)
        || audit_field_digest(r.details::text)
        || audit_field_digest(r.request_id))
$$;

-- The hash a row should carry, by its chain version.
CREATE FUNCTION audit_row_hash_versioned(prev bytea, r audit_log) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE r.chain_version
        WHEN 1 THEN audit_row_hash(prev, r)
        WHEN 2 THEN audit_row_hash_v2(prev, r)
    END
$$;

CREATE OR REPLACE FUNCTION audit_log_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    last audit_log%ROWTYPE;
BEGIN
    -- Appends to one organisation's chain are serialised; other organisations are unaffected.
    PERFORM pg_advisory_xact_lock(hashtextextended('gatehouse.audit:' || NEW.org_id, 0));
    SELECT * INTO last FROM audit_log WHERE org_id = NEW.org_id ORDER BY seq DESC LIMIT 1;
    NEW.seq := COALESCE(last.seq, 0) + 1;
    NEW.prev_hash := COALESCE(last.hash, '\x'::bytea);
    NEW.chain_version := 2;
    NEW.hash := audit_row_hash_v2(NEW.prev_hash, NEW);
    RETURN NEW;
END
$$;
