-- When the facts a host's row holds were seen (the ping they came with), so that facts from an
-- older ping (a report batch redelivered, or one another gateway sent late) do not replace
-- newer ones: facts are ordered by their own time, as report_at orders agent records.
-- last_update stays the row's last change by anyone (facts, a stop, a pre-registration). NULL
-- until this release stores a host's facts: then any facts are taken.
ALTER TABLE hosts ADD COLUMN facts_at timestamptz;
