-- The system-wide change freeze (POST /v1/envs/actions): one row. Every new deploy reads it
-- FOR SHARE under its stage's lock and the freeze UPDATEs it, so a deploy either committed
-- before the freeze did or sees it.
CREATE TABLE change_freeze (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    frozen      boolean NOT NULL DEFAULT false,
    operator    text,
    since       timestamptz,
    description text
);
INSERT INTO change_freeze (singleton) VALUES (true);
