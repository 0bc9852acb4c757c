//! TLS to the real PostgreSQL, which serves a certificate of the test CA (ops/lib/services.sh):
//! `verify-full` and `verify-ca` connect with that CA and refuse any other; `require` and the
//! default `prefer` encrypt without checking, as libpq does.

use store::Store;
use store::testing::{TestDatabase, UNRELATED_CA_PEM, test_ca};

/// `url` with its host replaced by `host` and `query` appended.
fn tls_url(url: &str, host: &str, query: &str) -> String {
    let url = url.replacen("@127.0.0.1:", &format!("@{host}:"), 1);
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

#[tokio::test]
async fn verify_full_and_verify_ca_connect_with_the_ca_that_signed_the_server() {
    let db = TestDatabase::new().await;
    let ca = test_ca();
    for host in ["127.0.0.1", "localhost"] {
        for mode in ["verify-full", "verify-ca"] {
            let url = tls_url(&db.url, host, &format!("sslmode={mode}&sslrootcert={}", ca.display()));
            let store = Store::connect(&url, 1).unwrap();
            store.ping().await.unwrap_or_else(|e| panic!("{mode} to {host}: {e}"));
            assert_eq!(store.outbox_len().await.unwrap(), 0, "queries work over TLS");
        }
    }
    for query in ["sslmode=require", "sslmode=prefer", "sslmode=disable"] {
        Store::connect(&tls_url(&db.url, "127.0.0.1", query), 1).unwrap().ping().await.unwrap();
    }
}

#[tokio::test]
async fn a_ca_that_did_not_sign_the_server_is_refused_clearly() {
    let db = TestDatabase::new().await;
    let dir = std::env::temp_dir().join(format!("teletraan-store-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wrong = dir.join("unrelated-ca.pem");
    std::fs::write(&wrong, UNRELATED_CA_PEM).unwrap();
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = tls_url(&db.url, "127.0.0.1", &format!("sslmode={mode}&sslrootcert={}", wrong.display()));
        let e = Store::connect(&url, 1).unwrap().ping().await.unwrap_err();
        assert!(e.to_string().contains("UnknownIssuer"), "{mode}: {e}");
        let e = Store::ensure_database(&url).await.unwrap_err();
        assert!(e.to_string().contains("UnknownIssuer"), "{mode}: {e}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
