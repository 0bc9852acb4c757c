//! Architecture invariants of DESIGN §3, checked on the resolved dependency graph
//! (`cargo metadata`), transitively: `schema` stays pure, the agent never links the database,
//! the broker or the server crates, nor does the command line (it speaks only the REST API),
//! the bus never links the database, and the API never links
//! the workers (it sends them commands; it never applies one itself).

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

struct Graph {
    names: HashMap<String, String>,
    deps: HashMap<String, Vec<String>>,
}

fn graph() -> Graph {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let names = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap().to_string(), p["name"].as_str().unwrap().to_string()))
        .collect();
    let mut deps = HashMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        // Only normal dependencies: what the crate links, not what its tests or build use.
        let normal = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null()))
            .map(|d| d["pkg"].as_str().unwrap().to_string())
            .collect();
        deps.insert(node["id"].as_str().unwrap().to_string(), normal);
    }
    Graph { names, deps }
}

fn transitive(g: &Graph, package: &str) -> BTreeSet<String> {
    let root = g.names.iter().find(|(_, n)| *n == package).map(|(id, _)| id.clone()).expect("package in workspace");
    let mut seen = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        for d in g.deps.get(&id).into_iter().flatten() {
            if seen.insert(g.names[d].clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

fn assert_none(package: &str, forbidden: &[&str]) {
    let deps = transitive(&graph(), package);
    let found: Vec<&&str> = forbidden.iter().filter(|f| deps.contains(**f)).collect();
    assert!(found.is_empty(), "{package} must not depend on {found:?} (directly or not)");
}

#[test]
fn schema_does_no_io() {
    assert_none(
        "schema",
        &["tokio", "tokio-postgres", "postgres", "deadpool-postgres", "lapin", "axum", "hyper", "reqwest", "store"],
    );
}

#[test]
fn agent_links_neither_database_nor_broker() {
    assert_none(
        "agent",
        &["store", "workers", "bus", "api", "lapin", "tokio-postgres", "postgres", "deadpool-postgres", "axum"],
    );
}

#[test]
fn the_command_line_speaks_only_the_public_api() {
    assert_none(
        "cli",
        &["store", "workers", "bus", "api", "lapin", "tokio-postgres", "postgres", "deadpool-postgres", "axum"],
    );
}

#[test]
fn bus_links_no_database() {
    assert_none("bus", &["store", "tokio-postgres", "postgres", "deadpool-postgres", "axum"]);
}

#[test]
fn api_never_links_the_workers() {
    assert_none("api", &["workers"]);
}

#[test]
fn the_check_sees_transitive_dependencies() {
    // api depends on lapin through bus and its own manifest, and on
    // tokio-postgres only through store: the walk must find both.
    let deps = transitive(&graph(), "api");
    assert!(deps.contains("tokio-postgres") && deps.contains("lapin") && deps.contains("schema"));
}

/// The modules a ping runs through: none may name the store's handle (`Store`) or a Postgres
/// client crate, so none can query Postgres. Every file of the gateway is checked but the
/// three that hold the store on purpose: `mod.rs` (the handle), `sync.rs` (loads, reloads)
/// and `enroll.rs` (the enrollment route); a new file is on the ping path until it is added
/// to that list. (That pings are answered while Postgres is away is shown by
/// `api/tests/outage.rs::while_postgres_is_cut_the_api_answers_503_json_and_after_it_is_back_the_same_calls_succeed`.)
#[test]
fn the_ping_path_holds_no_store_handle() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/src/gateway");
    let off_the_ping_path = ["mod.rs", "sync.rs", "enroll.rs"];
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("the gateway's sources") {
        let path = entry.expect("a directory entry").path();
        let file = path.file_name().and_then(|f| f.to_str()).unwrap_or_default().to_string();
        if !file.ends_with(".rs") || off_the_ping_path.contains(&file.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let named = text.lines().enumerate().find(|(_, line)| {
            let code = line.split("//").next().unwrap_or("");
            code.split(|c: char| !c.is_alphanumeric() && c != '_')
                .any(|word| ["Store", "tokio_postgres", "deadpool_postgres"].contains(&word))
        });
        assert!(
            named.is_none(),
            "api/src/gateway/{file}:{}: the ping path names the store or a Postgres client",
            named.map_or(0, |(i, _)| i + 1)
        );
        checked.push(file);
    }
    assert!(checked.len() >= 6 && checked.iter().any(|f| f == "ping.rs"), "the ping path's files: {checked:?}");
    // And the check reads the right files: the gateway module does hold a store.
    let module = std::fs::read_to_string(dir.join("mod.rs")).expect("mod.rs");
    assert!(module.contains("store: Store"), "the check looks at the gateway's sources");
}
