-- Per-host agent identity. Tokens gain a scope of host groups (AGENT and ENROLL tokens) and,
-- for ENROLL tokens, whether they may replace a live credential. A host that enrolls gets a
-- credential bound to its host id and name: the row below says which generation of it is
-- good (every enrollment and revocation bumps it). The credential itself is signed with a
-- key of signing_keys and never stored.
ALTER TABLE tokens
    ADD COLUMN groups   text[],
    ADD COLUMN reenroll boolean NOT NULL DEFAULT false;

CREATE TABLE host_credentials (
    host_id     text PRIMARY KEY,
    host_name   text NOT NULL,
    generation  integer NOT NULL,
    -- The enrollment token's scope: the groups the host may claim (NULL: any).
    groups      text[],
    token_id    text NOT NULL,
    enrolled_at timestamptz NOT NULL,
    revoked_at  timestamptz,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX host_credentials_name ON host_credentials (host_name);
CREATE INDEX host_credentials_updated ON host_credentials (updated_at);

CREATE TABLE signing_keys (
    name       text PRIMARY KEY,
    secret     bytea NOT NULL,
    created_at timestamptz NOT NULL
);
