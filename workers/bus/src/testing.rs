//! Test support: a broker namespace of its own per test, deleted when the test ends.

use crate::{BusConfig, delete_topology};

/// The broker tests use; override with `TELETRAAN_TEST_AMQP_URL`.
pub fn broker_url() -> String {
    std::env::var("TELETRAAN_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The broker's TLS listener (made by `ensure_services`, ops/lib/services.sh); override with
/// `TELETRAAN_TEST_AMQPS_URL`.
pub fn tls_broker_url() -> String {
    std::env::var("TELETRAAN_TEST_AMQPS_URL").unwrap_or_else(|_| "amqps://guest:guest@127.0.0.1:5671/%2f".into())
}

/// The PEM of the private CA that signed the broker's certificate: `ca.pem` in
/// `TELETRAAN_TEST_TLS_DIR` (default `/var/lib/teletraan-test-tls`), as `ensure_services`
/// makes it. Panics with what to run when it is missing.
pub fn test_ca_pem() -> String {
    let dir = std::env::var("TELETRAAN_TEST_TLS_DIR").unwrap_or_else(|_| "/var/lib/teletraan-test-tls".into());
    let path = std::path::Path::new(&dir).join("ca.pem");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{}: {e}: run ops/test.sh, or `. ops/lib/services.sh; ensure_services`, first", path.display())
    })
}

/// A namespace that exists for the life of this value.
pub struct TestBus {
    /// Its configuration.
    pub config: BusConfig,
}

impl TestBus {
    /// A fresh namespace (nothing is declared until something connects).
    pub fn new() -> TestBus {
        TestBus { config: BusConfig::new(broker_url(), format!("test-{}", uuid::Uuid::new_v4().simple())) }
    }

    /// A fresh namespace reached over TLS, trusting the test CA.
    pub fn tls() -> TestBus {
        let mut bus = TestBus::new();
        bus.config.url = tls_broker_url();
        bus.config.ca_pem = Some(test_ca_pem());
        bus
    }
}

impl Default for TestBus {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        let config = self.config.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let Err(e) = delete_topology(&config).await {
                    eprintln!("could not delete test namespace {}: {e}", config.namespace);
                }
            });
        })
        .join();
    }
}
