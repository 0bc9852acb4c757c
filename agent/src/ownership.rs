//! Handing a build over to the hook user: every directory, regular file and symlink of an
//! extracted build is given that user's uid and gid, so its hooks can work in their build.
//!
//! The walk never follows a symlink and never leaves the tree, even if the tree changes under
//! it: each directory is opened relative to its parent's descriptor with `O_NOFOLLOW`, each
//! entry is changed through its own descriptor (symlinks with `AT_SYMLINK_NOFOLLOW`), and a
//! regular file with more than one link is left alone (extraction makes no hard links, so such
//! a file was linked in from elsewhere). Children are changed before their directory.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};

/// A uid and gid that files are given to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The user id.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
}

/// Gives `dir` and everything under it to `owner` (see the module doc).
pub fn give_tree(dir: &Path, owner: Owner) -> Result<()> {
    let c_dir = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::io("cannot open", dir, std::io::ErrorKind::InvalidInput.into()))?;
    let fd = open_at(libc::AT_FDCWD, &c_dir, libc::O_DIRECTORY).map_err(|e| Error::io("cannot open", dir, e))?;
    give_dir(&fd, owner).map_err(|e| Error::io("cannot give to the hook user", dir, e))
}

/// Gives the entries of the open directory `dir`, then `dir` itself.
fn give_dir(dir: &OwnedFd, owner: Owner) -> std::io::Result<()> {
    for name in entries(dir)? {
        match open_at(dir.as_raw_fd(), &name, libc::O_NONBLOCK) {
            Ok(fd) => give_entry(&fd, owner)?,
            // O_NOFOLLOW on a symlink: change the link itself, never what it points to.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => chown_link(dir, &name, owner)?,
            // Removed meanwhile, or a kind of file that cannot be opened: nothing to give.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENXIO | libc::EACCES)) => {}
            Err(e) => return Err(e),
        }
    }
    fchown(dir, owner)
}

/// Gives one opened entry: a directory with its content, a regular file with a single link.
fn give_entry(fd: &OwnedFd, owner: Owner) -> std::io::Result<()> {
    // SAFETY: an all-zero `stat` is a valid value; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is an open descriptor and `st` a live local.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => give_dir(fd, owner),
        libc::S_IFREG if st.st_nlink == 1 => fchown(fd, owner),
        _ => Ok(()),
    }
}

/// Opens `name` under the directory `dir` without following a final symlink.
fn open_at(dir: RawFd, name: &CStr, flags: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated; openat returns a new descriptor or -1.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The names in the open directory `dir`, without `.` and `..`.
fn entries(dir: &OwnedFd) -> std::io::Result<Vec<CString>> {
    // fdopendir takes the descriptor over, so it gets its own duplicate.
    let dup = dir.try_clone()?;
    // SAFETY: `dup` is an open directory descriptor; on success the stream owns it.
    let stream = unsafe { libc::fdopendir(dup.as_raw_fd()) };
    if stream.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    std::mem::forget(dup);
    let mut names = Vec::new();
    loop {
        // SAFETY: `stream` is a live directory stream used by this thread only.
        let entry = unsafe { libc::readdir(stream) };
        if entry.is_null() {
            break;
        }
        // SAFETY: readdir returned a valid entry whose name is NUL-terminated; it is copied
        // before the next readdir call.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    // SAFETY: `stream` is live and closed once; this also closes the duplicate descriptor.
    unsafe { libc::closedir(stream) };
    Ok(names)
}

fn fchown(fd: &OwnedFd, owner: Owner) -> std::io::Result<()> {
    std::os::unix::fs::fchown(fd, Some(owner.uid), Some(owner.gid))
}

fn chown_link(dir: &OwnedFd, name: &CStr, owner: Owner) -> std::io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `dir` an open directory descriptor.
    let rc = unsafe { libc::fchownat(dir.as_raw_fd(), name.as_ptr(), owner.uid, owner.gid, libc::AT_SYMLINK_NOFOLLOW) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOENT) {
            return Err(e);
        }
    }
    Ok(())
}

/// The owner of `path` (not following a symlink), for tests and checks.
pub fn owner_of(path: &Path) -> std::io::Result<Owner> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path)?;
    Ok(Owner { uid: m.uid(), gid: m.gid() })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::testutil::TempDir;

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn a_tree_is_given_without_following_links_or_touching_hard_linked_files() {
        let t = TempDir::new("owner");
        let outside = t.path().join("outside");
        std::fs::write(&outside, "not part of the build").unwrap();
        let build = t.path().join("build");
        std::fs::create_dir_all(build.join("a/b")).unwrap();
        std::fs::write(build.join("a/b/file"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, build.join("a/link")).unwrap();
        std::os::unix::fs::symlink(t.path(), build.join("dirlink")).unwrap();
        std::fs::hard_link(&outside, build.join("hard")).unwrap();
        let me = owner_of(t.path()).unwrap();
        // Giving to oneself works for any user and walks the whole tree.
        give_tree(&build, me).unwrap();
        if !is_root() {
            eprintln!("not root: only the walk was checked, not a change of owner");
            return;
        }
        let nobody = Owner { uid: 65534, gid: 65534 };
        give_tree(&build, nobody).unwrap();
        for p in ["", "a", "a/b", "a/b/file", "a/link", "dirlink"] {
            assert_eq!(owner_of(&build.join(p)).unwrap(), nobody, "{p}");
        }
        assert_eq!(owner_of(&outside).unwrap(), me, "a symlink's target and a hard-linked file keep their owner");
        assert_eq!(std::fs::metadata(t.path()).unwrap().uid(), me.uid);
    }
}
