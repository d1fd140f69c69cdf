-- System-prompt layers. Every change is a new row (a version); nothing is ever updated.
-- The global layer belongs to the pseudo-organisation '_platform' and is readable by every
-- organisation; organisation layers are readable within their organisation; user layers only
-- by their owner (or organisation-wide transactions).

CREATE TABLE prompt_layers (
    org_id     text NOT NULL CHECK (org_id <> ''),
    kind       text NOT NULL CHECK (kind IN ('global', 'organization', 'user')),
    owner_id   text NOT NULL DEFAULT '' CHECK ((kind = 'user') = (owner_id <> '')),
    version    integer NOT NULL CHECK (version > 0),
    source     text NOT NULL CHECK (length(source) <= 32768),
    note       text NOT NULL DEFAULT '' CHECK (length(note) <= 500),
    author     text NOT NULL CHECK (author <> ''),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, kind, owner_id, version),
    CHECK ((kind = 'global') = (org_id = '_platform'))
);

ALTER TABLE prompt_layers ENABLE ROW LEVEL SECURITY;
ALTER TABLE prompt_layers FORCE ROW LEVEL SECURITY;
CREATE POLICY prompt_layers_read ON prompt_layers FOR SELECT
    USING (
        (org_id = (select nullif(current_setting('app.org_id', true), ''))
         OR org_id = '_platform')
        AND (kind <> 'user'
             OR owner_id = (select nullif(current_setting('app.user_id', true), ''))
             OR (select current_setting('app.org_wide', true)) = 'on')
    );
CREATE POLICY prompt_layers_write ON prompt_layers FOR INSERT
    WITH CHECK (
        org_id = (select nullif(current_setting('app.org_id', true), ''))
        AND (kind <> 'user'
             OR owner_id = (select nullif(current_setting('app.user_id', true), '')))
    );

GRANT SELECT, INSERT ON prompt_layers TO gatehouse_app;

-- A session may carry a prompt of its own: the last, most specific layer.
ALTER TABLE sessions ADD COLUMN prompt text CHECK (length(prompt) <= 32768);
