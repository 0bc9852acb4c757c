//! Forward-only migrations, embedded in the binary and applied under an advisory lock.

use crate::Result;

/// Every migration: (version, name, SQL). A test checks this list against the folder.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("../../migrations/0001_init.sql")),
    (2, "hot_path_indexes", include_str!("../../migrations/0002_hot_path_indexes.sql")),
    (3, "schedules_constraints_tags", include_str!("../../migrations/0003_schedules_constraints_tags.sql")),
    (4, "jobs", include_str!("../../migrations/0004_jobs.sql")),
    (5, "pipelines", include_str!("../../migrations/0005_pipelines.sql")),
    (6, "webhooks", include_str!("../../migrations/0006_webhooks.sql")),
    (7, "heartbeats_for_every_host", include_str!("../../migrations/0007_heartbeats_for_every_host.sql")),
    (8, "access", include_str!("../../migrations/0008_access.sql")),
    (9, "history", include_str!("../../migrations/0009_history.sql")),
    (10, "host_identity", include_str!("../../migrations/0010_host_identity.sql")),
    (11, "script_secrets", include_str!("../../migrations/0011_script_secrets.sql")),
    (12, "change_freeze", include_str!("../../migrations/0012_change_freeze.sql")),
    (13, "deploy_verdicts_and_start", include_str!("../../migrations/0013_deploy_verdicts_and_start.sql")),
    (14, "stage_links", include_str!("../../migrations/0014_stage_links.sql")),
    (15, "agent_steps", include_str!("../../migrations/0015_agent_steps.sql")),
    (16, "workers", include_str!("../../migrations/0016_workers.sql")),
    (17, "host_facts_at", include_str!("../../migrations/0017_host_facts_at.sql")),
];

/// Arbitrary constant that names the migration lock.
const LOCK_KEY: i64 = 0x7e1e_7aa9;

pub(crate) async fn run(client: &mut deadpool_postgres::Object) -> Result<Vec<i32>> {
    client.execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY]).await?;
    let outcome = apply(client).await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]).await?;
    outcome
}

async fn apply(client: &mut deadpool_postgres::Object) -> Result<Vec<i32>> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let done: Vec<i32> =
        client.query("SELECT version FROM schema_migrations", &[]).await?.iter().map(|r| r.get(0)).collect();
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[version, name]).await?;
        tx.commit().await?;
        tracing::info!(version, name, "applied migration");
        applied.push(*version);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_listed_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS.iter().map(|(v, n, _)| format!("{v:04}_{n}.sql")).collect();
        assert_eq!(files, listed);
        assert!(MIGRATIONS.windows(2).all(|w| w[0].0 < w[1].0));
    }

    /// What an older release still running during an upgrade could trip on.
    const CONTRACTING: [&str; 7] =
        ["DROP TABLE", "DROP COLUMN", "RENAME", "SET NOT NULL", "ALTER COLUMN", "DROP CONSTRAINT", "ADD CONSTRAINT"];

    /// The statements of a migration, upper-cased, without comments.
    fn statements(sql: &str) -> String {
        sql.lines().map(|l| l.split("--").next().unwrap_or("")).collect::<Vec<_>>().join(" ").to_uppercase()
    }

    /// Roles of two releases run side by side during an upgrade (docs/operations.md), so a
    /// migration only adds: tables, columns that are nullable or have a default, indexes. Taking
    /// something away (or tightening it) belongs to a later release than the one that stopped
    /// using it, and says so in a `-- contract:` comment naming that release. Migrations up to 15
    /// predate the rule (0008 set `tokens.principal` NOT NULL in the release that filled it).
    #[test]
    fn migrations_only_add_unless_they_say_they_contract() {
        for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > 15) {
            if sql.contains("-- contract:") {
                continue;
            }
            let found: Vec<&str> = CONTRACTING.iter().copied().filter(|s| statements(sql).contains(s)).collect();
            assert!(
                found.is_empty(),
                "migration {version:04}_{name} contracts the schema ({found:?}) without a `-- contract:` comment"
            );
            for line in statements(sql).split(';').filter(|s| s.contains("ADD COLUMN")) {
                assert!(
                    !line.contains("NOT NULL") || line.contains("DEFAULT"),
                    "migration {version:04}_{name} adds a NOT NULL column without a default: {line}"
                );
            }
        }
    }

    #[test]
    fn the_contract_check_finds_what_it_looks_for() {
        let bad = "ALTER TABLE agents DROP COLUMN changed; -- gone";
        assert!(CONTRACTING.iter().any(|s| statements(bad).contains(s)));
        let commented = "-- we could DROP TABLE x one day\nCREATE TABLE y (a int);";
        assert!(!CONTRACTING.iter().any(|s| statements(commented).contains(s)));
        let added = statements("ALTER TABLE t ADD COLUMN c boolean NOT NULL DEFAULT true");
        assert!(added.contains("NOT NULL") && added.contains("DEFAULT"));
    }
}
