-- Staged rollouts (deploy schedules), tag-based deploy constraints, and the tags hosts report.

CREATE TABLE schedules (
    env_id           text PRIMARY KEY REFERENCES environs (env_id) ON DELETE CASCADE,
    schedule_id      text NOT NULL UNIQUE,
    total_sessions   integer NOT NULL,
    host_numbers     text NOT NULL,
    cooldown_times   text NOT NULL,
    state            text NOT NULL DEFAULT 'NOT_STARTED',
    current_session  integer NOT NULL DEFAULT 0,
    state_start_time timestamptz NOT NULL
);

CREATE TABLE deploy_constraints (
    env_id          text PRIMARY KEY REFERENCES environs (env_id) ON DELETE CASCADE,
    constraint_id   text NOT NULL UNIQUE,
    constraint_key  text NOT NULL,
    max_parallel    integer NOT NULL,
    constraint_type text NOT NULL,
    start_date      timestamptz NOT NULL,
    last_update     timestamptz NOT NULL
);

-- Tags as the host's agent reports them (ec2Tags); replaced on every change.
CREATE TABLE host_tags (
    host_id    text NOT NULL,
    tag_name   text NOT NULL,
    tag_value  text NOT NULL,
    PRIMARY KEY (host_id, tag_name)
);
CREATE INDEX host_tags_name_value ON host_tags (tag_name, tag_value);
