-- The audit history: every configuration write and every action, written in the transaction
-- that makes it, with who did it, what it was before and after, and the command it came from.
CREATE TABLE history (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL,
    principal   text NOT NULL,
    env_id      text,
    env_name    text,
    stage_name  text,
    kind        text NOT NULL,
    action      text NOT NULL,
    before      jsonb,
    after       jsonb,
    command_id  text
);
CREATE INDEX history_stage ON history (env_id, id DESC);
CREATE INDEX history_env_name ON history (env_name, id DESC);
CREATE INDEX history_principal ON history (principal, id DESC);
CREATE INDEX history_at ON history (at);
