//! Test support: a fresh, migrated database per test, dropped when the test ends (even when
//! it panics).

use crate::Store;

/// The server tests use; override with `TELETRAAN_TEST_DATABASE_URL` (any database name: the
/// per-test database replaces it).
pub fn server_url() -> String {
    std::env::var("TELETRAAN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://teletraan:teletraan@127.0.0.1:5432/postgres".into())
}

/// The private CA that signed the certificate the test PostgreSQL and RabbitMQ serve, made by
/// `ensure_services` (ops/lib/services.sh): `ca.pem` in `TELETRAAN_TEST_TLS_DIR`, by default
/// `/var/lib/teletraan-test-tls`. Panics with what to run when it is missing.
pub fn test_ca() -> std::path::PathBuf {
    let dir = std::env::var("TELETRAAN_TEST_TLS_DIR").unwrap_or_else(|_| "/var/lib/teletraan-test-tls".into());
    let ca = std::path::Path::new(&dir).join("ca.pem");
    assert!(
        ca.is_file(),
        "{} is missing: run ops/test.sh, or `. ops/lib/services.sh; ensure_services`, to set up TLS for the \
         test services",
        ca.display()
    );
    ca
}

/// A CA certificate that signed nothing the tests meet (its key is thrown away): what a client
/// trusts when it trusts the wrong CA.
pub const UNRELATED_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBnTCCAUOgAwIBAgIUOtPQyxYX88lcQnl8VCesQUBU8bkwCgYIKoZIzj0EAwIw
IzEhMB8GA1UEAwwYYSBDQSB0aGF0IHNpZ25lZCBub3RoaW5nMCAXDTI2MTIwMjA4
MTQzMFoYDzIxMjYxMTA4MDgxNDMwWjAjMSEwHwYDVQQDDBhhIENBIHRoYXQgc2ln
bmVkIG5vdGhpbmcwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARy8qtL+GNP6TcS
CgBBOnmcGKOPbX4qgcONECqu2xfEZoxS+8esCcu9BhnNEi25kQpwBv5IPO2uOwEU
CLp2eKBPo1MwUTAdBgNVHQ4EFgQU2PbvbnUeKnmaWPWOfYSr5VcW0rkwHwYDVR0j
BBgwFoAU2PbvbnUeKnmaWPWOfYSr5VcW0rkwDwYDVR0TAQH/BAUwAwEB/zAKBggq
hkjOPQQDAgNIADBFAiAXwZxMc+5Tlc94GrCwQ+pSTpVKNaRJqRfrW2h/8cHZfgIh
AOeL74B8gt4V3kQ18ivsMxJ1wvB/+zRVWkToXWQou9N5
-----END CERTIFICATE-----
";

/// A database that exists for the life of this value.
pub struct TestDatabase {
    /// Its URL.
    pub url: String,
    name: String,
    /// A store on it.
    pub store: Store,
}

impl TestDatabase {
    /// Creates and migrates a database with a unique name.
    pub async fn new() -> TestDatabase {
        let name = format!("teletraan_test_{}", uuid::Uuid::new_v4().simple());
        let url = with_dbname(&server_url(), &name);
        Store::ensure_database(&url).await.expect("create test database");
        let store = Store::connect(&url, 8).expect("connect test database");
        store.migrate().await.expect("migrate test database");
        TestDatabase { url, name, store }
    }

    /// A copy of this database as it is now (`CREATE DATABASE … TEMPLATE`), with a store of
    /// its own, dropped like any test database: for tests that compare what two histories make
    /// of one start (with the same generated ids in both). Postgres copies only a database
    /// nobody is connected to, so this ends the connections of `self.store` first: use the
    /// copies, not `self`, afterwards.
    pub async fn fork(&self) -> TestDatabase {
        let name = format!("teletraan_test_{}", uuid::Uuid::new_v4().simple());
        let url = with_dbname(&self.url, &name);
        let admin = with_dbname(&self.url, "postgres");
        let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(conn);
        // A pooled connection may still be closing when the copy starts: try a few times.
        let mut tries = 0;
        loop {
            client
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&self.name],
                )
                .await
                .expect("end the connections to the database copied");
            match client.batch_execute(&format!("CREATE DATABASE \"{name}\" TEMPLATE \"{}\"", self.name)).await {
                Ok(()) => break,
                Err(e) if tries < 20 => {
                    tries += 1;
                    eprintln!("copying {} failed ({e}); trying again", self.name);
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("copy {}: {e}", self.name),
            }
        }
        let store = Store::connect(&url, 8).expect("connect the copy");
        TestDatabase { url, name, store }
    }

    /// A connection of its own, for a test's raw SQL (seeding, checking what no method reads).
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(conn);
        client
    }

    /// When a host was last seen according to its stored heartbeat (ms since the epoch).
    pub async fn last_seen(&self, host_id: &str) -> Option<i64> {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(conn);
        let row = client
            .query_opt(
                "SELECT (extract(epoch FROM last_seen) * 1000)::int8 FROM host_heartbeats WHERE host_id = $1",
                &[&host_id],
            )
            .await
            .expect("read a heartbeat");
        row.map(|r| r.get(0))
    }
}

/// Replaces the database name in a `postgres://` URL.
pub fn with_dbname(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.rsplit_once('/') {
        Some((head, _)) if head.contains("//") => format!("{head}/{name}"),
        _ => format!("{base}/{name}"),
    };
    match query {
        Some(q) => format!("{base}?{q}"),
        None => base,
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = with_dbname(&self.url, "postgres");
        // Drop runs inside or outside a runtime; a thread with its own runtime works in both.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                let Ok((client, conn)) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await else { return };
                tokio::spawn(conn);
                let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
            });
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(with_dbname("postgres://u@h:5432/postgres", "x"), "postgres://u@h:5432/x");
        assert_eq!(with_dbname("postgres://u@h:5432/a?sslmode=disable", "x"), "postgres://u@h:5432/x?sslmode=disable");
        assert_eq!(with_dbname("postgres://u@h:5432", "x"), "postgres://u@h:5432/x");
    }
}
