//! Writing entries of an archive into a fresh directory, whatever the format: the path checks
//! (absolute, `..`, through a symlink or a file), symlink targets that must stay inside, the
//! size and entry budget, cancellation, and the final check of every link of the finished tree.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::Limits;
use crate::error::{Error, Result};

/// Most symlinks followed while resolving one link target.
const MAX_LINK_DEPTH: usize = 40;
/// Copy buffer; the cancel flag is checked between chunks.
const CHUNK: usize = 64 * 1024;

/// The directory being filled, with what it may still take.
pub(super) struct Tree<'a> {
    root: &'a Path,
    limits: Limits,
    entries: u64,
    bytes: u64,
    cancel: &'a AtomicBool,
}

impl<'a> Tree<'a> {
    /// A tree rooted at the existing, empty directory `root`.
    pub(super) fn new(root: &'a Path, limits: Limits, cancel: &'a AtomicBool) -> Tree<'a> {
        Tree { root, limits, entries: 0, bytes: 0, cancel }
    }

    /// Counts one more entry; refuses past the entry limit or when cancelled.
    pub(super) fn count_entry(&mut self) -> Result<()> {
        self.check_cancel()?;
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(too_many_entries(self.limits.max_entries));
        }
        Ok(())
    }

    /// Refuses an entry that declares more bytes than the budget has left (before writing it).
    pub(super) fn check_declared(&self, size: u64) -> Result<()> {
        if size > self.limits.max_bytes.saturating_sub(self.bytes) {
            return Err(too_many_bytes(self.limits.max_bytes));
        }
        Ok(())
    }

    fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) { Err(Error::Aborted) } else { Ok(()) }
    }

    /// The entry's path, relative and checked (`name` is how the archive spells it).
    pub(super) fn relative(&self, name: &str, raw: &[u8]) -> Result<PathBuf> {
        safe_relative(raw).map_err(|reason| refuse(name, reason))
    }

    /// A directory entry.
    pub(super) fn dir(&mut self, name: &str, rel: &Path, mode: u32) -> Result<()> {
        make_dirs(self.root, rel, name)?;
        set_mode(&self.root.join(rel), (mode & 0o777) | 0o700)
    }

    /// A regular file entry, copied from `data` within the byte budget. Set-id bits are dropped.
    pub(super) fn file(&mut self, name: &str, rel: &Path, mode: u32, data: &mut dyn Read) -> Result<()> {
        prepare_leaf(self.root, rel, name)?;
        let path = self.root.join(rel);
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("cannot create", &path, e))?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            self.check_cancel()?;
            let n = data.read(&mut buf).map_err(|e| Error::Archive(format!("entry {name:?}: {e}")))?;
            if n == 0 {
                break;
            }
            self.bytes += n as u64;
            if self.bytes > self.limits.max_bytes {
                return Err(too_many_bytes(self.limits.max_bytes));
            }
            out.write_all(&buf[..n]).map_err(|e| Error::io("cannot write", &path, e))?;
        }
        set_mode(&path, mode & 0o777)
    }

    /// A symlink entry; refused when its target leaves the tree (following the links already
    /// written).
    pub(super) fn symlink(&mut self, name: &str, rel: &Path, target: &[u8]) -> Result<()> {
        if target.is_empty() {
            return Err(refuse(name, "symlink without a target"));
        }
        if target.contains(&0) {
            return Err(refuse(name, "symlink target contains a NUL byte"));
        }
        let target = PathBuf::from(OsStr::from_bytes(target));
        let parent = rel.parent().unwrap_or(Path::new(""));
        if resolves_outside(self.root, parent, &target) {
            let reason = format!("symlink to {} points outside the build dir", target.display());
            return Err(refuse(name, &reason));
        }
        prepare_leaf(self.root, rel, name)?;
        let path = self.root.join(rel);
        std::os::unix::fs::symlink(&target, &path).map_err(|e| Error::io("cannot create symlink", &path, e))
    }

    /// Checks every symlink of the finished tree (a later link can make an earlier one escape).
    pub(super) fn finish(self) -> Result<()> {
        self.check_cancel()?;
        verify_links(self.root, self.root)
    }
}

/// An [`Error::UnsafeEntry`] naming the entry.
pub(super) fn refuse(name: &str, reason: &str) -> Error {
    Error::UnsafeEntry { entry: name.to_string(), reason: reason.to_string() }
}

/// The error for an archive with too many entries.
pub(super) fn too_many_entries(max: u64) -> Error {
    Error::ArchiveLimit(format!("more than {max} entries (limit archive_max_entries)"))
}

/// The error for an archive that expands past the byte limit.
pub(super) fn too_many_bytes(max: u64) -> Error {
    Error::ArchiveLimit(format!("expands to more than {max} bytes (limit archive_max_bytes)"))
}

/// The entry path as relative components; refuses absolute paths, `..` and NUL bytes.
fn safe_relative(bytes: &[u8]) -> std::result::Result<PathBuf, &'static str> {
    if bytes.contains(&0) {
        return Err("NUL byte in the path");
    }
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(bytes)).components() {
        match c {
            Component::Prefix(_) | Component::RootDir => return Err("absolute paths are not allowed"),
            Component::ParentDir => return Err("'..' is not allowed in paths"),
            Component::CurDir => {}
            Component::Normal(p) => out.push(p),
        }
    }
    Ok(out)
}

/// Creates the directories of `rel` under `root`, refusing to pass through a symlink or file.
fn make_dirs(root: &Path, rel: &Path, name: &str) -> Result<()> {
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => return Err(refuse(name, "path goes through a symlink")),
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(refuse(name, "path goes through a file")),
            Err(_) => fs::create_dir(&cur).map_err(|e| Error::io("cannot create", &cur, e))?,
        }
    }
    Ok(())
}

/// Makes the parent directories of a file or link entry and removes a file or link it
/// replaces (a later entry wins, as with `tar`); never replaces a directory.
fn prepare_leaf(root: &Path, rel: &Path, name: &str) -> Result<()> {
    if let Some(parent) = rel.parent() {
        make_dirs(root, parent, name)?;
    }
    let path = root.join(rel);
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => Err(refuse(name, "would replace a directory")),
        Ok(_) => fs::remove_file(&path).map_err(|e| Error::io("cannot replace", &path, e)),
        Err(_) => Ok(()),
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| Error::io("cannot chmod", path, e))
}

/// Whether `target`, read from a link in directory `dir` (relative to `root`), resolves
/// outside `root`, following the links that exist under `root` now.
fn resolves_outside(root: &Path, dir: &Path, target: &Path) -> bool {
    let mut stack: Vec<OsString> = dir.components().map(|c| c.as_os_str().to_os_string()).collect();
    let mut queue: VecDeque<PathBuf> = target.components().map(|c| PathBuf::from(c.as_os_str())).collect();
    let mut followed = 0;
    while let Some(part) = queue.pop_front() {
        match part.components().next() {
            None | Some(Component::CurDir) => {}
            Some(Component::RootDir | Component::Prefix(_)) => return true,
            Some(Component::ParentDir) => {
                if stack.pop().is_none() {
                    return true;
                }
            }
            Some(Component::Normal(c)) => {
                stack.push(c.to_os_string());
                let here: PathBuf = root.join(stack.iter().collect::<PathBuf>());
                if fs::symlink_metadata(&here).is_ok_and(|m| m.file_type().is_symlink()) {
                    followed += 1;
                    let Ok(next) = fs::read_link(&here) else { return true };
                    if followed > MAX_LINK_DEPTH {
                        return true;
                    }
                    stack.pop();
                    for c in next.components().rev() {
                        queue.push_front(PathBuf::from(c.as_os_str()));
                    }
                }
            }
        }
    }
    false
}

/// Checks every symlink under `dir` (a later link can make an earlier one escape).
fn verify_links(root: &Path, dir: &Path) -> Result<()> {
    let rd = fs::read_dir(dir).map_err(|e| Error::io("cannot list", dir, e))?;
    for e in rd {
        let e = e.map_err(|e| Error::io("cannot list", dir, e))?;
        let path = e.path();
        let ft = e.file_type().map_err(|err| Error::io("cannot stat", &path, err))?;
        if ft.is_dir() {
            verify_links(root, &path)?;
        } else if ft.is_symlink() {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let target = fs::read_link(&path).map_err(|err| Error::io("cannot read link", &path, err))?;
            if resolves_outside(root, rel.parent().unwrap_or(Path::new("")), &target) {
                let reason = format!("symlink to {} resolves outside the build dir", target.display());
                return Err(refuse(&rel.display().to_string(), &reason));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_checked() {
        assert_eq!(safe_relative(b"./a/./b").unwrap(), PathBuf::from("a/b"));
        assert!(safe_relative(b"/etc/passwd").is_err());
        assert!(safe_relative(b"a/../../b").is_err());
        assert!(safe_relative(b"a\0b").is_err());
    }
}
