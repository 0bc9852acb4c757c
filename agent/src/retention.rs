//! Retention, after each round: old builds beyond the newest N per environment are removed
//! (never one in use), and temp files left by an interrupted download or extraction go.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use crate::layout::Layout;
use crate::status::Envs;

/// Removes, per environment, the builds beyond the newest `keep` archives (by mtime), never
/// one that any environment has live, had live just before, is deploying, or still keeps.
/// Returns the removed build ids.
pub fn clean_builds(layout: &Layout, envs: &Envs, keep: usize) -> Vec<String> {
    let mut protected = BTreeSet::new();
    for (name, e) in envs {
        protected.extend(layout.live_build_id(name));
        protected.extend(e.previous_build_id.clone());
        protected.extend(e.build_info.as_ref().map(|b| b.build_id.clone()));
    }
    let archives = archives_by_env(&layout.builds_dir(), envs);
    let mut stale: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for list in archives.values() {
        for (i, (id, file)) in list.iter().enumerate() {
            if i < keep {
                protected.insert(id.clone());
            } else {
                stale.entry(id.clone()).or_default().push(file.clone());
            }
        }
    }
    let mut removed = Vec::new();
    for (id, files) in stale {
        if protected.contains(&id) {
            continue;
        }
        let _ = fs::remove_file(layout.build_marker(&id));
        let dir = layout.build_dir(&id);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an old build");
                continue;
            }
            _ => {}
        }
        for f in files {
            let _ = fs::remove_file(layout.builds_dir().join(f));
        }
        tracing::info!(build.id = %id, "removed old build");
        removed.push(id);
    }
    remove_leftovers(&layout.builds_dir());
    removed
}

/// Temp files (`.<name>.part`) and temp dirs (`.<buildId>.tmp-*`) of a download or extraction
/// that a crash interrupted. Called between rounds, when neither runs.
fn remove_leftovers(builds: &Path) {
    let Ok(rd) = fs::read_dir(builds) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            continue;
        }
        if !(name.ends_with(".part") || name.contains(".tmp-")) {
            continue;
        }
        let removed = if e.file_type().is_ok_and(|t| t.is_dir()) {
            fs::remove_dir_all(e.path())
        } else {
            fs::remove_file(e.path())
        };
        match removed {
            Ok(()) => tracing::info!(file = %e.path().display(), "removed an interrupted download or extraction"),
            Err(err) => tracing::warn!(file = %e.path().display(), error = %err, "cannot remove a leftover"),
        }
    }
}

/// Archives `<env>-<buildId>.<ext>` per env, newest first. A file belongs to the longest env
/// name that prefixes it (env names may contain `-`).
fn archives_by_env(builds: &Path, envs: &Envs) -> BTreeMap<String, Vec<(String, String)>> {
    let mut found: BTreeMap<String, Vec<(std::time::SystemTime, String, String)>> = BTreeMap::new();
    let Ok(rd) = fs::read_dir(builds) else { return BTreeMap::new() };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.file_type().is_ok_and(|t| t.is_file()) || name.starts_with('.') || name.ends_with(".extracted") {
            continue;
        }
        let owner = envs.keys().filter(|env| name.starts_with(&format!("{env}-"))).max_by_key(|env| env.len());
        let Some(env) = owner else { continue };
        let rest = &name[env.len() + 1..];
        let id = rest.split('.').next().unwrap_or("");
        if id.is_empty() {
            continue;
        }
        let mtime = e.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
        found.entry(env.clone()).or_default().push((mtime, id.to_string(), name.clone()));
    }
    found
        .into_iter()
        .map(|(env, mut list)| {
            list.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
            (env, list.into_iter().map(|(_, id, f)| (id, f)).collect())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::stage_build;
    use crate::status::{BuildInfo, EnvEntry};
    use crate::testutil::TempDir;
    use std::time::{Duration, SystemTime};

    fn fake_build(layout: &Layout, env: &str, id: &str, age_s: u64) {
        fs::create_dir_all(layout.build_dir(id)).unwrap();
        fs::write(layout.build_marker(id), id).unwrap();
        let archive = layout.archive(env, id, "tar.gz");
        fs::write(&archive, b"x").unwrap();
        let f = fs::File::options().write(true).open(&archive).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(age_s)).unwrap();
    }

    #[test]
    fn retention_keeps_the_newest_and_the_live_and_previous_builds() {
        let dir = TempDir::new("retain");
        let layout = Layout::new(dir.path());
        layout.create_dirs().unwrap();
        for (i, id) in ["b1", "b2", "b3", "b4", "b5"].iter().enumerate() {
            fake_build(&layout, "web", id, 100 - i as u64 * 10);
        }
        fake_build(&layout, "web-api", "c1", 500);
        stage_build(&layout, "web", "b1", &Default::default(), None).unwrap();
        fs::write(layout.builds_dir().join(".web-b9.tar.gz.part"), b"half").unwrap();
        fs::create_dir(layout.builds_dir().join(".b9.tmp-1-0")).unwrap();
        let mut web = EnvEntry { previous_build_id: Some("b2".into()), ..EnvEntry::default() };
        web.build_info = Some(BuildInfo { build_id: "b1".into(), ..BuildInfo::default() });
        let envs = Envs::from([("web".to_string(), web), ("web-api".to_string(), EnvEntry::default())]);
        let removed = clean_builds(&layout, &envs, 2);
        assert_eq!(removed, ["b3"], "b5, b4 newest; b1 live; b2 previous");
        assert!(!layout.build_dir("b3").exists() && !layout.build_marker("b3").exists());
        assert!(!layout.archive("web", "b3", "tar.gz").exists());
        assert!(layout.build_dir("c1").exists(), "web-api's archive is not web's");
        assert!(!layout.builds_dir().join(".web-b9.tar.gz.part").exists(), "interrupted download removed");
        assert!(!layout.builds_dir().join(".b9.tmp-1-0").exists(), "interrupted extraction removed");
    }
}
