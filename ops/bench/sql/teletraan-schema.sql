-- Teletraan's tables that a steady-state ping touches (reference teletraan-core.md §1), moved
-- to Postgres with the same columns, keys and indexes: environs, hosts, hosts_and_agents,
-- groups_and_envs, hosts_and_envs, agents (and agent_counts, which admission reads).
-- Timestamps stay epoch-millisecond BIGINTs and flags stay small integers, as in MySQL.
\set ON_ERROR_STOP on

CREATE TABLE environs (
    env_id                   varchar(22) PRIMARY KEY,
    env_name                 varchar(64) NOT NULL,
    stage_name               varchar(64) NOT NULL,
    env_state                varchar(32) NOT NULL DEFAULT 'NORMAL',
    state                    varchar(32) NOT NULL DEFAULT 'NORMAL',
    description              varchar(1024),
    build_name               varchar(64),
    branch                   varchar(64),
    chatroom                 varchar(128),
    deploy_id                varchar(22),
    deploy_type              varchar(32),
    max_parallel             integer NOT NULL DEFAULT 1,
    max_parallel_pct         smallint NOT NULL DEFAULT 0,
    max_parallel_rp          integer NOT NULL DEFAULT 1,
    priority                 varchar(16) NOT NULL DEFAULT 'NORMAL',
    system_priority          integer,
    stuck_th                 integer NOT NULL DEFAULT 600,
    success_th               integer NOT NULL DEFAULT 10000,
    adv_config_id            varchar(22),
    sc_config_id             varchar(22) UNIQUE,
    last_operator            varchar(64) NOT NULL,
    last_update              bigint NOT NULL,
    accept_type              varchar(32) NOT NULL DEFAULT 'AUTO',
    email_recipients         varchar(1024),
    notify_authors           smallint,
    watch_recipients         varchar(1024),
    group_mention_recipients varchar(1024),
    metrics_config_id        varchar(22),
    alarm_config_id          varchar(22),
    webhooks_config_id       varchar(22),
    max_deploy_num           integer NOT NULL DEFAULT 5000,
    max_deploy_day           integer NOT NULL DEFAULT 365,
    is_docker                smallint NOT NULL DEFAULT 0,
    cluster_name             varchar(128),
    override_policy          varchar(32) NOT NULL DEFAULT 'OVERRIDE',
    schedule_id              varchar(22),
    deploy_constraint_id     varchar(22),
    external_id              char(36),
    allow_private_build      smallint DEFAULT 0,
    ensure_trusted_build     smallint DEFAULT 0,
    stage_type               varchar(32) NOT NULL DEFAULT 'DEFAULT',
    is_sox                   smallint DEFAULT 0,
    termination_limit        integer,
    external_project_name    varchar(255),
    use_entitlements         smallint DEFAULT 0,
    UNIQUE (env_name, stage_name)
);
CREATE INDEX environs_cluster_name ON environs (cluster_name);

-- One row per host and group.
CREATE TABLE hosts (
    host_id     varchar(64) NOT NULL,
    host_name   varchar(64),
    group_name  varchar(128) NOT NULL,
    ip          varchar(64),
    create_date bigint NOT NULL,
    last_update bigint NOT NULL,
    state       varchar(32) NOT NULL,
    can_retire  integer NOT NULL DEFAULT 0,
    account_id  varchar(64),
    PRIMARY KEY (host_id, group_name),
    UNIQUE (group_name, host_name)
);
CREATE INDEX hosts_host_name ON hosts (host_name);
CREATE INDEX hosts_state ON hosts (state);

-- One row per host: the heartbeat.
CREATE TABLE hosts_and_agents (
    host_id            varchar(64) PRIMARY KEY,
    host_name          varchar(64),
    ip                 varchar(64),
    create_date        bigint NOT NULL,
    last_update        bigint NOT NULL,
    agent_version      varchar(64) NOT NULL DEFAULT 'UNKNOWN',
    auto_scaling_group varchar(128),
    normandie_status   varchar(64) NOT NULL DEFAULT 'UNKNOWN',
    knox_status        varchar(64) NOT NULL DEFAULT 'UNKNOWN'
);
CREATE INDEX hosts_and_agents_host_name ON hosts_and_agents (host_name);

CREATE TABLE groups_and_envs (
    group_name varchar(128) NOT NULL,
    env_id     varchar(22) NOT NULL,
    PRIMARY KEY (group_name, env_id),
    UNIQUE (env_id, group_name)
);

CREATE TABLE hosts_and_envs (
    host_name varchar(64) NOT NULL,
    env_id    varchar(22) NOT NULL,
    PRIMARY KEY (host_name, env_id),
    UNIQUE (env_id, host_name)
);

CREATE TABLE agents (
    host_id                 varchar(64) NOT NULL,
    host_name               varchar(64),
    env_id                  varchar(22) NOT NULL,
    deploy_id               varchar(22) NOT NULL,
    deploy_stage            varchar(32) NOT NULL,
    state                   varchar(32) NOT NULL,
    status                  varchar(32) NOT NULL,
    start_date              bigint NOT NULL,
    last_update             bigint NOT NULL,
    last_operator           varchar(64) NOT NULL,
    last_err_no             integer NOT NULL DEFAULT 0,
    fail_count              integer DEFAULT 0,
    first_deploy            smallint DEFAULT 0,
    first_deploy_time       bigint,
    stage_start_date        bigint,
    container_health_status varchar(32) NOT NULL DEFAULT '',
    PRIMARY KEY (host_id, env_id)
);
CREATE INDEX agents_env_host_name ON agents (env_id, host_name);
CREATE INDEX agents_host_name ON agents (host_name);
CREATE INDEX agents_env_deploy_stage ON agents (env_id, deploy_stage);
CREATE INDEX agents_env_first_deploy ON agents (env_id, first_deploy, deploy_stage, state);

CREATE TABLE agent_counts (
    env_id         varchar(22) PRIMARY KEY,
    deploy_id      varchar(22),
    existing_count integer NOT NULL DEFAULT 0,
    active_count   integer NOT NULL DEFAULT 0,
    last_refresh   bigint NOT NULL DEFAULT 0
);
