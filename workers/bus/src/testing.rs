//! Test support: a broker namespace of its own per test, deleted when the test ends.

use crate::{BusConfig, delete_topology};

/// The broker tests use; override with `TELETRAAN_TEST_AMQP_URL`.
pub fn broker_url() -> String {
    std::env::var("TELETRAAN_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
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
