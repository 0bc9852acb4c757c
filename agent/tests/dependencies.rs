//! Architecture invariant: the agent never links the database or the message broker, and of
//! the workspace it uses `schema` only.

#[test]
fn agent_depends_on_no_database_broker_or_server_crate() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let manifest: toml::Table = toml::from_str(&text).unwrap();
    let forbidden = ["store", "workers", "api", "ops", "lapin", "tokio-postgres", "deadpool-postgres", "postgres"];
    for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
        let Some(deps) = manifest.get(section).and_then(|d| d.as_table()) else { continue };
        for name in deps.keys() {
            assert!(!forbidden.contains(&name.as_str()), "agent must not depend on {name} ({section})");
        }
    }
    let deps = manifest["dependencies"].as_table().unwrap();
    assert!(deps.contains_key("schema"));
}
