-- Named queries. Each starts with a "-- name: NAME" line; the text up to the next one is the query.

-- name: provision_principal
-- Creates the organisation, the user and the user's roles on first sight, in one round trip.
-- Idempotent: existing rows are left as they are.
WITH org AS (
    INSERT INTO organizations (id) VALUES ($1) ON CONFLICT (id) DO NOTHING
), usr AS (
    INSERT INTO users (org_id, id) VALUES ($1, $2) ON CONFLICT (org_id, id) DO NOTHING
), roles AS (
    INSERT INTO memberships (org_id, user_id, role)
    SELECT $1, $2, role FROM unnest($3::text[]) AS role
    ON CONFLICT (org_id, user_id, role) DO NOTHING
)
SELECT 1;
