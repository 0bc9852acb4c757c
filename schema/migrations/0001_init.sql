-- The foundation schema: stages with their configuration and capacity, builds, deploys, the
-- agent records (host x stage), hosts, tokens, commands and the outbox.
-- Timestamps are timestamptz; the JSON API shows epoch milliseconds.

CREATE TABLE environs (
    env_id               text PRIMARY KEY,
    env_name             text NOT NULL,
    stage_name           text NOT NULL,
    env_state            text NOT NULL DEFAULT 'NORMAL',
    state                text NOT NULL DEFAULT 'NORMAL',
    description          text NOT NULL DEFAULT '',
    build_name           text NOT NULL,
    branch               text NOT NULL DEFAULT 'master',
    chatroom             text,
    deploy_id            text,
    deploy_type          text,
    max_parallel         integer NOT NULL DEFAULT 1,
    max_parallel_pct     integer NOT NULL DEFAULT 0,
    priority             text NOT NULL DEFAULT 'NORMAL',
    system_priority      integer,
    stuck_th             integer NOT NULL DEFAULT 600,
    success_th           integer NOT NULL DEFAULT 10000,
    accept_type          text NOT NULL DEFAULT 'AUTO',
    email_recipients     text,
    notify_authors       boolean NOT NULL DEFAULT false,
    watch_recipients     text,
    max_deploy_num       integer NOT NULL DEFAULT 5000,
    max_deploy_day       integer NOT NULL DEFAULT 365,
    is_docker            boolean NOT NULL DEFAULT false,
    override_policy      text NOT NULL DEFAULT 'OVERRIDE',
    allow_private_build  boolean NOT NULL DEFAULT false,
    ensure_trusted_build boolean NOT NULL DEFAULT false,
    stage_type           text NOT NULL DEFAULT 'PRODUCTION',
    agent_configs        jsonb NOT NULL DEFAULT '{}',
    script_configs       jsonb NOT NULL DEFAULT '{}',
    last_operator        text NOT NULL,
    last_update          timestamptz NOT NULL,
    -- Bumped by every change a gateway must see (config, capacity, deploy, admissions); change
    -- events carry it so gateways apply them in order and reload on a gap.
    version              bigint NOT NULL DEFAULT 1,
    UNIQUE (env_name, stage_name)
);

CREATE TABLE stage_groups (
    env_id     text NOT NULL REFERENCES environs (env_id) ON DELETE CASCADE,
    group_name text NOT NULL,
    PRIMARY KEY (env_id, group_name)
);
CREATE INDEX stage_groups_group ON stage_groups (group_name);

CREATE TABLE stage_hosts (
    env_id    text NOT NULL REFERENCES environs (env_id) ON DELETE CASCADE,
    host_name text NOT NULL,
    PRIMARY KEY (env_id, host_name)
);
CREATE INDEX stage_hosts_host ON stage_hosts (host_name);

CREATE TABLE builds (
    build_id        text PRIMARY KEY,
    build_name      text NOT NULL,
    artifact_url    text NOT NULL,
    artifact_sha256 text,
    scm             text,
    scm_repo        text NOT NULL,
    scm_branch      text NOT NULL,
    scm_commit      text NOT NULL,
    scm_commit_7    text NOT NULL,
    commit_info     text,
    commit_date     timestamptz NOT NULL,
    publish_info    text,
    publisher       text NOT NULL,
    publish_date    timestamptz NOT NULL
);
CREATE INDEX builds_name_date ON builds (build_name, publish_date DESC);
CREATE INDEX builds_commit7 ON builds (scm_commit_7);

-- Deploys outlive their stage (history), so no foreign key to environs; a build cannot be
-- deleted while a deploy references it.
CREATE TABLE deploys (
    deploy_id   text PRIMARY KEY,
    env_id      text NOT NULL,
    build_id    text NOT NULL REFERENCES builds (build_id),
    deploy_type text NOT NULL,
    alias       text,
    state       text NOT NULL,
    start_date  timestamptz NOT NULL,
    operator    text NOT NULL,
    last_update timestamptz NOT NULL,
    description text,
    suc_total   integer NOT NULL DEFAULT 0,
    fail_total  integer NOT NULL DEFAULT 0,
    total       integer NOT NULL DEFAULT 0,
    suc_date    timestamptz,
    acc_status  text NOT NULL,
    from_deploy text
);
CREATE INDEX deploys_env_start ON deploys (env_id, start_date DESC);
CREATE INDEX deploys_build ON deploys (build_id);

-- One row per host and stage. Written by workers only: from gateway reports (report_at orders
-- them), by admission and by user actions (control_seq orders those).
CREATE TABLE agents (
    host_id                 text NOT NULL,
    env_id                  text NOT NULL,
    host_name               text NOT NULL,
    deploy_id               text NOT NULL,
    deploy_stage            text NOT NULL,
    state                   text NOT NULL,
    status                  text NOT NULL,
    start_date              timestamptz NOT NULL,
    last_update             timestamptz NOT NULL,
    last_operator           text NOT NULL,
    last_err_no             integer NOT NULL DEFAULT 0,
    fail_count              integer NOT NULL DEFAULT 0,
    first_deploy            boolean NOT NULL DEFAULT false,
    first_deploy_time       timestamptz,
    stage_start_date        timestamptz NOT NULL,
    container_health_status text NOT NULL DEFAULT '',
    control_seq             bigint NOT NULL DEFAULT 0,
    report_at               timestamptz,
    PRIMARY KEY (host_id, env_id)
);
CREATE INDEX agents_env_deploy ON agents (env_id, deploy_id);
CREATE INDEX agents_host_name ON agents (host_name);

CREATE TABLE agent_errors (
    host_id    text NOT NULL,
    env_id     text NOT NULL,
    host_name  text NOT NULL,
    error_msg  text NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (host_id, env_id)
);

CREATE TABLE hosts (
    host_id           text PRIMARY KEY,
    host_name         text NOT NULL,
    ip                text,
    agent_version     text NOT NULL DEFAULT 'UNKNOWN',
    autoscaling_group text,
    availability_zone text,
    state             text NOT NULL DEFAULT 'ACTIVE',
    create_date       timestamptz NOT NULL,
    last_update       timestamptz NOT NULL
);
CREATE INDEX hosts_name ON hosts (host_name);

CREATE TABLE host_groups (
    group_name text NOT NULL,
    host_id    text NOT NULL,
    PRIMARY KEY (group_name, host_id)
);
CREATE INDEX host_groups_host ON host_groups (host_id);

-- Narrow on purpose: heartbeats are one batched UPDATE per batch, and a narrow row with free
-- space in its page keeps them HOT updates.
CREATE TABLE host_heartbeats (
    host_id   text PRIMARY KEY,
    last_seen timestamptz NOT NULL
) WITH (fillfactor = 70);

CREATE TABLE tokens (
    token_hash bytea PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    role       text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz
);

CREATE TABLE commands (
    command_id  text PRIMARY KEY,
    kind        text NOT NULL,
    operator    text NOT NULL,
    payload     jsonb NOT NULL,
    status      text NOT NULL,
    result      jsonb,
    error       jsonb,
    created_at  timestamptz NOT NULL,
    finished_at timestamptz
);

-- Messages written in the same transaction as the change they announce; the relay publishes
-- them with confirms and deletes them. A lease lets several relays share the table.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    exchange     text NOT NULL,
    routing_key  text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    leased_until timestamptz NOT NULL DEFAULT '-infinity'
);
