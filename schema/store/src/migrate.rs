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
}
