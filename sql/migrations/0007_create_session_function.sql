-- Session creation in one statement (issue 14 item 5).
--
-- A create used to be four round trips under the organisation's creation lock (lock, count,
-- insert, audit row) before its commit; on a busy gateway each waited its turn on the event
-- loop while the lock was held, so an organisation's creates queued behind each other. Here
-- the lock, the caps check, the insert and the audit row are one call.
--
-- SECURITY INVOKER: the function runs with the caller's rights, so row-level security applies to
-- every statement in it exactly as if the caller had sent them. The session belongs to the
-- transaction's tenant (app.org_id, app.user_id), never to a parameter; the transaction must be
-- organisation-wide, or the organisation's count would only see the caller's own sessions.
-- VOLATILE (the default) matters: each statement takes a fresh snapshot, so the count, taken
-- after the lock, sees every create committed before it.
--
-- A cap reached raises SQLSTATE GH001 with DETAIL 'user' or 'organization' (nothing written).

CREATE FUNCTION gatehouse_create_session(
    session_id uuid,
    session_name text,
    session_allowed_tools text[],
    session_variables jsonb,
    session_metadata jsonb,
    ttl_seconds integer,
    session_prompt text,
    max_active_per_user integer,
    max_active_per_org integer,
    audit_org_id text,
    audit_actor text,
    audit_event text,
    audit_target text,
    audit_outcome text,
    audit_details jsonb,
    audit_request_id text
) RETURNS sessions
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, public
AS $$
DECLARE
    tenant_org text := nullif(current_setting('app.org_id', true), '');
    tenant_user text := nullif(current_setting('app.user_id', true), '');
    user_active bigint;
    org_active bigint;
    created sessions;
BEGIN
    IF tenant_org IS NULL OR tenant_user IS NULL
       OR current_setting('app.org_wide', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'session creation needs an organisation-wide tenant transaction'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- The same lock key as the lock_session_quota query: one lock however a create is made.
    PERFORM pg_advisory_xact_lock(hashtextextended('gatehouse.sessions:' || tenant_org, 0));
    SELECT count(*) FILTER (WHERE s.user_id = tenant_user), count(*)
      INTO user_active, org_active
      FROM sessions s
     WHERE s.org_id = tenant_org AND s.status = 'active' AND s.expires_at > now();
    IF user_active >= max_active_per_user THEN
        RAISE EXCEPTION 'at most % active sessions per user', max_active_per_user
            USING ERRCODE = 'GH001', DETAIL = 'user';
    END IF;
    IF org_active >= max_active_per_org THEN
        RAISE EXCEPTION 'at most % active sessions per organisation', max_active_per_org
            USING ERRCODE = 'GH001', DETAIL = 'organization';
    END IF;
    INSERT INTO sessions (id, org_id, user_id, name, allowed_tools, variables, metadata,
                          expires_at, prompt)
    VALUES (session_id, tenant_org, tenant_user, session_name, session_allowed_tools,
            session_variables, session_metadata, now() + make_interval(secs => ttl_seconds),
            session_prompt)
    RETURNING * INTO created;
    INSERT INTO audit_log (org_id, actor, event, target, outcome, details, request_id,
                           prev_hash, hash)
    VALUES (audit_org_id, audit_actor, audit_event, audit_target, audit_outcome, audit_details,
            audit_request_id, '\x', '\x');
    RETURN created;
END
$$;

REVOKE ALL ON FUNCTION gatehouse_create_session(uuid, text, text[], jsonb, jsonb, integer, text,
    integer, integer, text, text, text, text, text, jsonb, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gatehouse_create_session(uuid, text, text[], jsonb, jsonb, integer,
    text, integer, integer, text, text, text, text, text, jsonb, text) TO gatehouse_app;
