-- Principals (people, CI scripts, agents), their roles on the system or an environment
-- (held directly or through a directory group), and tokens that belong to a principal.
-- Tokens keep their table and columns (older processes still read name and role); role is
-- now the token's kind: API (the principal's grants decide) or AGENT (pings only), with
-- ADMIN kept for tokens made before, read as API.

CREATE TABLE principals (
    name       text PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('USER', 'SCRIPT', 'AGENT')),
    created_at timestamptz NOT NULL,
    created_by text NOT NULL
);

CREATE TABLE grants (
    subject_kind text NOT NULL CHECK (subject_kind IN ('PRINCIPAL', 'GROUP')),
    subject      text NOT NULL,
    -- '*' for the whole system, else an environment's name.
    scope        text NOT NULL,
    role         text NOT NULL CHECK (role IN ('READER', 'PUBLISHER', 'OPERATOR', 'ADMIN')),
    granted_by   text NOT NULL,
    granted_at   timestamptz NOT NULL,
    PRIMARY KEY (subject_kind, subject, scope)
);
CREATE INDEX grants_scope ON grants (scope);

ALTER TABLE tokens
    ADD COLUMN principal    text,
    ADD COLUMN description  text,
    ADD COLUMN created_by   text,
    ADD COLUMN revoked_at   timestamptz,
    ADD COLUMN last_used_at timestamptz;

INSERT INTO principals (name, kind, created_at, created_by)
SELECT name, CASE role WHEN 'AGENT' THEN 'AGENT' ELSE 'USER' END, created_at, 'migration' FROM tokens
ON CONFLICT DO NOTHING;
INSERT INTO grants (subject_kind, subject, scope, role, granted_by, granted_at)
SELECT 'PRINCIPAL', name, '*', 'ADMIN', 'migration', created_at FROM tokens WHERE role = 'ADMIN'
ON CONFLICT DO NOTHING;
UPDATE tokens SET principal = name, created_by = 'migration';
ALTER TABLE tokens ALTER COLUMN principal SET NOT NULL;
CREATE INDEX tokens_principal ON tokens (principal);
