-- Organisations, users and memberships, sealed per organisation by row-level security.
--
-- Tenant keys are the identifiers the identity provider puts in its tokens (text, never empty).
-- Every policy reads the transaction-local setting through (select nullif(...)) so that an empty
-- or missing setting matches no row and the planner evaluates it once per statement.

DO $$
BEGIN
    CREATE ROLE gatehouse_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT;
EXCEPTION WHEN duplicate_object THEN
    NULL;
END
$$;

CREATE TABLE organizations (
    id          text PRIMARY KEY CHECK (id <> '' AND length(id) <= 255),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    org_id        text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE
                  CHECK (org_id <> ''),
    id            text NOT NULL CHECK (id <> '' AND length(id) <= 255),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id)
);

CREATE TABLE memberships (
    org_id      text NOT NULL CHECK (org_id <> ''),
    user_id     text NOT NULL CHECK (user_id <> ''),
    role        text NOT NULL CHECK (role <> '' AND length(role) <= 64),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, user_id, role),
    FOREIGN KEY (org_id, user_id) REFERENCES users (org_id, id) ON DELETE CASCADE
);

-- Composite primary keys lead with org_id, which serves tenant lookups; users of a role need
-- their own index.
CREATE INDEX memberships_org_role_idx ON memberships (org_id, role);

ALTER TABLE organizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE organizations FORCE ROW LEVEL SECURITY;
CREATE POLICY organizations_tenant ON organizations
    USING (id = (select nullif(current_setting('app.org_id', true), '')))
    WITH CHECK (id = (select nullif(current_setting('app.org_id', true), '')));

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY users_tenant ON users
    USING (org_id = (select nullif(current_setting('app.org_id', true), '')))
    WITH CHECK (org_id = (select nullif(current_setting('app.org_id', true), '')));

ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY memberships_tenant ON memberships
    USING (org_id = (select nullif(current_setting('app.org_id', true), '')))
    WITH CHECK (org_id = (select nullif(current_setting('app.org_id', true), '')));

GRANT USAGE ON SCHEMA public TO gatehouse_app;
GRANT SELECT, INSERT ON organizations TO gatehouse_app;
GRANT SELECT, INSERT ON users TO gatehouse_app;
GRANT SELECT, INSERT, DELETE ON memberships TO gatehouse_app;
