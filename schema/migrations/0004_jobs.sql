-- Periodic jobs shared by any number of worker processes. A job is due at `due_at`; the
-- worker that claims it holds a lease it renews while it runs; a worker that dies leaves a
-- lease that expires, and another one claims the same due time again (attempt + 1). Each
-- attempt is a row of job_runs, so "once per due time" can be checked from the table.

CREATE TABLE jobs (
    name          text PRIMARY KEY,
    due_at        timestamptz NOT NULL,
    period_ms     bigint NOT NULL,
    leased_by     text,
    leased_until  timestamptz,
    attempt       integer NOT NULL DEFAULT 0,
    last_started  timestamptz,
    last_finished timestamptz,
    last_success  timestamptz,
    last_error    text,
    runs          bigint NOT NULL DEFAULT 0,
    failures      bigint NOT NULL DEFAULT 0
);

CREATE TABLE job_runs (
    job         text NOT NULL,
    due_at      timestamptz NOT NULL,
    attempt     integer NOT NULL,
    worker      text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    -- NULL while running (or when its worker died), then 'ok' or 'failed'.
    outcome     text,
    detail      text,
    PRIMARY KEY (job, due_at, attempt)
);
CREATE INDEX job_runs_started ON job_runs (job, started_at DESC);

-- The janitor finds hosts marked for termination.
CREATE INDEX hosts_state ON hosts (state) WHERE state <> 'ACTIVE';
