-- Webhooks: each stage's hooks (Teletraan's EnvWebHookBean) and every delivery of them.

CREATE TABLE webhooks (
    env_id        text PRIMARY KEY REFERENCES environs (env_id) ON DELETE CASCADE,
    -- Lists of hooks as the API shows them, placeholders in place.
    pre_hooks     jsonb NOT NULL DEFAULT '[]',
    post_hooks    jsonb NOT NULL DEFAULT '[]',
    -- Signs deliveries (HMAC-SHA256); write-only through the API.
    secret        text,
    last_operator text NOT NULL,
    last_update   timestamptz NOT NULL
);

-- One row per hook per deploy phase. The request is computed once, fully substituted, when
-- the deploy fires it; workers only send it and record each attempt. A deleted stage takes its
-- deliveries with it (the API reaches them through the stage only).
CREATE TABLE webhook_deliveries (
    id               text PRIMARY KEY,
    env_id           text NOT NULL REFERENCES environs (env_id) ON DELETE CASCADE,
    env_name         text NOT NULL,
    stage_name       text NOT NULL,
    deploy_id        text NOT NULL,
    phase            text NOT NULL CHECK (phase IN ('PRE', 'POST')),
    hook_index       integer NOT NULL,
    method           text NOT NULL,
    url              text NOT NULL,
    headers          jsonb NOT NULL DEFAULT '[]',
    body             text,
    status           text NOT NULL CHECK (status IN ('PENDING', 'DELIVERED', 'FAILED')),
    attempts         integer NOT NULL DEFAULT 0,
    last_status_code integer,
    last_error       text,
    -- Held by the worker sending it (through its backoff too), so a duplicate message
    -- neither sends it twice at once nor skips the wait.
    leased_by        text,
    leased_until     timestamptz,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    delivered_at     timestamptz,
    -- A phase fires each hook once per deploy, whatever runs the evaluation twice.
    UNIQUE (deploy_id, phase, hook_index)
);
-- A stage's deliveries, newest first.
CREATE INDEX webhook_deliveries_stage ON webhook_deliveries (env_id, created_at DESC);
-- What is not delivered (yet), for the list of failures and for operators.
CREATE INDEX webhook_deliveries_undelivered ON webhook_deliveries (env_id, status, created_at DESC)
    WHERE status <> 'DELIVERED';
