-- The worker processes alive: each writes its row every couple of seconds and deletes it when
-- it stops. The live ones (seen within the lease) share the report partitions out among
-- themselves (schema::partition::assigned), so a worker joining or leaving moves partitions
-- within seconds. Rows of workers gone for an hour are deleted by the next heartbeat.
CREATE TABLE workers (
    name       text PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at    timestamptz NOT NULL
);
