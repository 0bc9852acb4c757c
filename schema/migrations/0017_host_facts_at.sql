-- When the facts a host's row holds were seen (the ping they came with), so that facts from an
-- older ping (a report batch redelivered, or one another gateway sent late) do not replace
-- newer ones: facts are ordered by their own time, as report_at orders agent records.
-- last_update stays the row's last change by anyone (facts, a stop, a pre-registration). NULL
-- while no facts of the host were stored: then any facts are taken.
ALTER TABLE hosts ADD COLUMN facts_at timestamptz;
-- Hosts that pinged before this release have their facts stored already (a pre-registered
-- host that never pinged has none): admission under GROUP_BY_GROUP waits for hosts whose
-- facts it lacks, and must not wait for these.
UPDATE hosts SET facts_at = last_update WHERE facts_at IS NULL AND state <> 'PROVISIONED';
