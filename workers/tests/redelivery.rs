//! Redelivery, against a real RabbitMQ and Postgres: each consumer of the workers is fed every
//! message of a realistic sequence twice and out of order (seeded, several seeds), and the
//! database it leaves is compared with the one single in-order delivery of the same sequence
//! leaves, both starting from copies of one database. Each handler is called as the consumer
//! loop calls it, on real deliveries taken from its work queue; retries come back after the
//! rest, as through the delay queue. Where the design orders messages itself (reports, by
//! their `report_at` and the control sequence), the test's doc states what it promises instead
//! of exact equality. `REDELIVERY_SEED=<n>` replays one seed.

mod support;

#[path = "redelivery/commands.rs"]
mod commands;

#[path = "redelivery/dead_letters.rs"]
mod dead_letters;

#[path = "redelivery/reports.rs"]
mod reports;

#[path = "redelivery/webhooks.rs"]
mod webhooks;
