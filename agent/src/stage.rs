//! STAGING: render the build's templates, then point the live symlink at it atomically.

use std::collections::BTreeMap;
use std::fs;

use crate::error::{Error, Result};
use crate::extract;
use crate::layout::{Layout, sync_dir};
use crate::ownership::{Owner, give_tree};
use crate::template;

/// STAGING: renders the templates of `builds/<buildId>` with `vars` (see [`template`]), then
/// points `targets/<env>` at it with a temp link renamed over the old one. Rendering comes
/// first so a refused template leaves the old build live. Returns the id of the build that was
/// live before, if it changed.
///
/// A build given to the hook user (`owner`) is taken back for the rendering and given back
/// after it: the checks that keep rendering inside the build hold only while no one else can
/// change the tree (the hook user may run a daemon meanwhile).
pub fn stage_build(
    layout: &Layout,
    env: &str,
    build_id: &str,
    vars: &BTreeMap<String, String>,
    owner: Option<Owner>,
) -> Result<Option<String>> {
    if !extract::is_extracted(layout, build_id) {
        return Err(Error::NotDownloaded(build_id.to_string()));
    }
    let build = layout.build_dir(build_id);
    let rendered = match owner {
        Some(owner) if !vars.is_empty() => {
            give_tree(&build, agent_owner())?;
            let rendered = template::render_build(&build, vars);
            give_tree(&build, owner)?;
            rendered?
        }
        _ => template::render_build(&build, vars)?,
    };
    if rendered > 0 {
        tracing::info!(env, build.id = build_id, templates = rendered, "templates rendered");
    }
    let previous = layout.live_build_id(env);
    if previous.as_deref() == Some(build_id) {
        return Ok(None);
    }
    let target = layout.target(env);
    let tmp = layout.targets_dir().join(format!("{env}.tmp"));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(layout.build_dir(build_id), &tmp)
        .map_err(|e| Error::io("cannot create symlink", &tmp, e))?;
    fs::rename(&tmp, &target).map_err(|e| Error::io("cannot switch the live symlink", &target, e))?;
    sync_dir(&layout.targets_dir())?;
    tracing::info!(env, build.id = build_id, previous = previous.as_deref().unwrap_or("-"), "live build switched");
    Ok(previous)
}

/// The agent's own user and group.
fn agent_owner() -> Owner {
    // SAFETY: geteuid and getegid have no preconditions and cannot fail.
    unsafe { Owner { uid: libc::geteuid(), gid: libc::getegid() } }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn fake_build(layout: &Layout, id: &str) {
        fs::create_dir_all(layout.build_dir(id).join("teletraan")).unwrap();
        fs::write(layout.build_dir(id).join("teletraan/app.conf.tmpl"), "port=${TELETRAAN_PORT}").unwrap();
        fs::write(layout.build_marker(id), id).unwrap();
    }

    #[test]
    fn staging_renders_switches_the_link_and_returns_the_previous_build() {
        let dir = TempDir::new("stage");
        let layout = Layout::new(dir.path());
        layout.create_dirs().unwrap();
        let vars = BTreeMap::from([("PORT".to_string(), "8080".to_string())]);
        assert!(matches!(stage_build(&layout, "web", "b1", &vars, None), Err(Error::NotDownloaded(_))));
        fake_build(&layout, "b1");
        fake_build(&layout, "b2");
        assert_eq!(stage_build(&layout, "web", "b1", &vars, None).unwrap(), None);
        assert_eq!(fs::read_to_string(layout.target("web").join("teletraan/app.conf")).unwrap(), "port=8080");
        assert_eq!(stage_build(&layout, "web", "b2", &BTreeMap::new(), None).unwrap(), Some("b1".into()));
        assert_eq!(layout.live_build_id("web").as_deref(), Some("b2"));
        assert!(!layout.build_dir("b2").join("teletraan/app.conf").exists(), "no variables, no rendering");
        let vars = BTreeMap::from([("PORT".to_string(), "9090".to_string())]);
        assert_eq!(stage_build(&layout, "web", "b2", &vars, None).unwrap(), None, "already live: only re-render");
        assert_eq!(fs::read_to_string(layout.target("web").join("teletraan/app.conf")).unwrap(), "port=9090");
        assert!(!layout.targets_dir().join("web.tmp").exists());
    }
}
