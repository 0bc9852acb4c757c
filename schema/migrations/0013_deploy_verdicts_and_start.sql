-- A verdict (PENDING_ACCEPT, ACCEPTED, REJECTED) that came before its deploy succeeded: kept,
-- and applied when the deploy first succeeds.
ALTER TABLE deploys ADD COLUMN pending_verdict text;
-- Deploys by start across stages: today's count (GET /v1/deploys/dailycount) and the search
-- without a stage filter.
CREATE INDEX deploys_start ON deploys (start_date DESC);
