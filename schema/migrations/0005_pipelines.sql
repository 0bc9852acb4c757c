-- Pipelines: each stage's auto-deploy settings, build tags, and how long a succeeding deploy
-- waits for a verdict.

CREATE TABLE promotes (
    env_id         text PRIMARY KEY REFERENCES environs (env_id) ON DELETE CASCADE,
    promote_type   text NOT NULL DEFAULT 'MANUAL',
    pred_stage     text,
    queue_size     integer NOT NULL DEFAULT 1,
    schedule       text,
    delay          integer NOT NULL DEFAULT 0,
    disable_policy text NOT NULL DEFAULT 'AUTO',
    fail_policy    text NOT NULL DEFAULT 'CONTINUE',
    last_operator  text NOT NULL,
    last_update    timestamptz NOT NULL
);
CREATE INDEX promotes_auto ON promotes (promote_type) WHERE promote_type = 'AUTO';

-- A build tag is stored against the build name with the tagged build's facts, so it can
-- mark later builds of its branch.
CREATE TABLE tags (
    tag_id            text PRIMARY KEY,
    value             text NOT NULL,
    target_type       text NOT NULL,
    target_id         text NOT NULL,
    build_id          text,
    build_commit      text,
    build_repo        text,
    build_branch      text,
    build_commit_date timestamptz,
    operator          text NOT NULL,
    created_date      timestamptz NOT NULL,
    comments          text,
    meta_info         text
);
CREATE INDEX tags_target ON tags (target_type, target_id, created_date);
CREATE INDEX tags_value ON tags (value, target_type, created_date);

ALTER TABLE environs ADD COLUMN accept_timeout integer NOT NULL DEFAULT 0;
