//! Where the agent keeps things under its base directory, the single-instance lock, and the
//! atomic file write every persistent file goes through.
//!
//! ```text
//! <dir>/agent.lock                 exclusive lock: one agent per base directory (0600)
//! <dir>/env_status                 JSON status, one entry per environment (0600)
//! <dir>/credential                 the host's credential, when it enrolled (0600)
//! <dir>/<env>_SCRIPT_CONFIG        the stage's script variables (key=value lines, 0600)
//! <dir>/builds/<buildId>/          an extracted build
//! <dir>/builds/<buildId>.extracted marker: the extraction is complete
//! <dir>/builds/<env>-<buildId>.<ext> the downloaded archive
//! <dir>/targets/<env>              symlink to the live build (TARGET)
//! <dir>/logs/<env>.log             hook output, appended
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The paths under one base directory. Env names and build ids are validated by `schema`
/// (letters, digits, `_`, `-`), so joining them cannot leave the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    base: PathBuf,
}

impl Layout {
    /// A layout rooted at `base` (made absolute so hooks get absolute paths).
    pub fn new(base: impl Into<PathBuf>) -> Layout {
        let base = base.into();
        let base = std::path::absolute(&base).unwrap_or(base);
        Layout { base }
    }

    /// The base directory.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The status file.
    pub fn status_file(&self) -> PathBuf {
        self.base.join("env_status")
    }

    /// The lock file.
    pub fn lock_file(&self) -> PathBuf {
        self.base.join("agent.lock")
    }

    /// Shared directory of archives and extracted builds (`BUILDS_DIR`).
    pub fn builds_dir(&self) -> PathBuf {
        self.base.join("builds")
    }

    /// An extracted build.
    pub fn build_dir(&self, build_id: &str) -> PathBuf {
        self.builds_dir().join(build_id)
    }

    /// The marker written once a build is completely extracted.
    pub fn build_marker(&self, build_id: &str) -> PathBuf {
        self.builds_dir().join(format!("{build_id}.extracted"))
    }

    /// The downloaded archive of a build for one environment.
    pub fn archive(&self, env: &str, build_id: &str, ext: &str) -> PathBuf {
        self.builds_dir().join(format!("{env}-{build_id}.{ext}"))
    }

    /// Directory of the live symlinks.
    pub fn targets_dir(&self) -> PathBuf {
        self.base.join("targets")
    }

    /// The live symlink of an environment (`TARGET`).
    pub fn target(&self, env: &str) -> PathBuf {
        self.targets_dir().join(env)
    }

    /// The script variables file of an environment.
    pub fn script_config(&self, env: &str) -> PathBuf {
        self.base.join(format!("{env}_SCRIPT_CONFIG"))
    }

    /// Directory of the hook logs.
    pub fn logs_dir(&self) -> PathBuf {
        self.base.join("logs")
    }

    /// The hook log of an environment.
    pub fn log(&self, env: &str) -> PathBuf {
        self.logs_dir().join(format!("{env}.log"))
    }

    /// Creates the directories the agent writes into.
    pub fn create_dirs(&self) -> Result<()> {
        for dir in [self.base.clone(), self.builds_dir(), self.targets_dir(), self.logs_dir()] {
            fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create directory", &dir, e))?;
        }
        Ok(())
    }

    /// Prepares the directories for hooks that run as another user: the base, `builds/` and
    /// `targets/` get the search bit for group and others, so the hook user reaches `TARGET`
    /// and `BUILDS_DIR` (passing through the base, never listing it); `logs/` becomes the
    /// agent's only (hooks write their output through descriptors the agent opened, and it
    /// may hold what a hook printed). The agent's files are 0600 anyway.
    pub fn prepare_for_hook_user(&self) -> Result<()> {
        for dir in [self.base.clone(), self.builds_dir(), self.targets_dir()] {
            set_mode(&dir, |mode| mode | 0o011)?;
        }
        set_mode(&self.logs_dir(), |mode| mode & !0o077)
    }

    /// The build the live symlink of `env` points to, if it points to an existing directory.
    pub fn live_build(&self, env: &str) -> Option<PathBuf> {
        let link = fs::read_link(self.target(env)).ok()?;
        let dir = if link.is_absolute() { link } else { self.targets_dir().join(link) };
        dir.is_dir().then_some(dir)
    }

    /// The id of the live build of `env` (the last component of the symlink's target).
    pub fn live_build_id(&self, env: &str) -> Option<String> {
        self.live_build(env)?.file_name().map(|n| n.to_string_lossy().into_owned())
    }
}

/// Changes the permission bits of `dir` with `change`, when that changes them.
fn set_mode(dir: &Path, change: impl Fn(u32) -> u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(dir).map_err(|e| Error::io("cannot stat", dir, e))?.permissions().mode() & 0o7777;
    if change(mode) != mode {
        fs::set_permissions(dir, fs::Permissions::from_mode(change(mode)))
            .map_err(|e| Error::io("cannot change the mode of", dir, e))?;
    }
    Ok(())
}

/// An exclusive `flock` on the base directory's lock file, held while the value lives.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock without waiting; fails with [`Error::Locked`] when another agent holds it.
    pub fn acquire(layout: &Layout) -> Result<DirLock> {
        let path = layout.lock_file();
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(PRIVATE_MODE)
            .open(&path)
            .map_err(|e| Error::io("cannot open lock file", &path, e))?;
        // SAFETY: flock on a file descriptor we own; it has no memory effects.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                Error::Locked(path)
            } else {
                Error::io("cannot lock", &path, err)
            });
        }
        // The pid is informational only (who holds it); the flock is the lock.
        let _ = file.set_len(0).and_then(|_| writeln!(file, "{}", std::process::id()));
        Ok(DirLock { _file: file })
    }
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsync, rename over
/// `path`, fsync of the directory. A crash leaves either the old or the new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with_mode(path, bytes, 0o666)
}

/// [`write_atomic`] for a file only its owner may read or write: the temp file is created
/// with mode 0600, so the content is never readable by anyone else, not even for a moment.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with_mode(path, bytes, PRIVATE_MODE)
}

/// Mode of the agent's own files (status, script config, lock, credential): the owner only.
pub const PRIVATE_MODE: u32 = 0o600;

fn write_atomic_with_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        // A temp file left by a killed agent may have another mode: never reuse it.
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("cannot write", &tmp, e));
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("cannot rename into place", path, e)
    })?;
    sync_dir(dir)
}

/// Fsyncs a directory so a rename inside it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("cannot sync directory", dir, e))
}

/// The machine's host name.
pub fn machine_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_the_same_dir_is_refused() {
        let dir = crate::testutil::TempDir::new("lock");
        let layout = Layout::new(dir.path());
        layout.create_dirs().unwrap();
        let held = DirLock::acquire(&layout).unwrap();
        let err = DirLock::acquire(&layout).unwrap_err();
        assert!(matches!(err, Error::Locked(_)), "{err}");
        drop(held);
        DirLock::acquire(&layout).unwrap();
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = crate::testutil::TempDir::new("atomic");
        let p = dir.path().join("f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_agent_files_are_private_and_the_way_to_builds_is_open_for_hook_users() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::testutil::TempDir::new("modes");
        let layout = Layout::new(dir.path());
        layout.create_dirs().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for d in [layout.base().to_path_buf(), layout.builds_dir(), layout.targets_dir(), layout.logs_dir()] {
            fs::set_permissions(&d, fs::Permissions::from_mode(0o750)).unwrap();
        }
        let _lock = DirLock::acquire(&layout).unwrap();
        write_private(&layout.status_file(), b"{}").unwrap();
        write_private(&layout.status_file(), b"{}").unwrap();
        assert_eq!((mode(&layout.lock_file()), mode(&layout.status_file())), (0o600, 0o600));
        layout.prepare_for_hook_user().unwrap();
        assert_eq!(mode(layout.base()), 0o751);
        assert_eq!((mode(&layout.builds_dir()), mode(&layout.targets_dir())), (0o751, 0o751));
        assert_eq!(mode(&layout.logs_dir()), 0o700);
    }

    #[test]
    fn live_build_follows_the_symlink() {
        let dir = crate::testutil::TempDir::new("live");
        let layout = Layout::new(dir.path());
        layout.create_dirs().unwrap();
        assert_eq!(layout.live_build("web"), None);
        fs::create_dir(layout.build_dir("b1")).unwrap();
        std::os::unix::fs::symlink(layout.build_dir("b1"), layout.target("web")).unwrap();
        assert_eq!(layout.live_build_id("web").as_deref(), Some("b1"));
        fs::remove_dir(layout.build_dir("b1")).unwrap();
        assert_eq!(layout.live_build("web"), None, "a dangling link is no live build");
    }
}
