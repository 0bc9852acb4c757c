-- A stage's dashboard graphs and alarms (Teletraan's metrics and alarms configs), shown on the
-- board: JSON lists, replaced whole.
ALTER TABLE environs ADD COLUMN metrics_links jsonb NOT NULL DEFAULT '[]';
ALTER TABLE environs ADD COLUMN alarm_links jsonb NOT NULL DEFAULT '[]';
