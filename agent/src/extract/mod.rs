//! Safe extraction of a build archive (tar, optionally gzip-compressed) into
//! `builds/<buildId>/`.
//!
//! The archive is unpacked into a temp directory beside the build dir and renamed into place
//! only when complete; then the marker `builds/<buildId>.extracted` is written. Refused, with
//! the entry named in the error: absolute paths, `..`, symlinks whose target resolves outside
//! the build dir (checked again on the finished tree, following links, so a chain of links
//! cannot escape), writing through a symlink, hard links, device files and fifos. Set-id bits
//! are dropped. Nothing is ever written outside the temp directory.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use crate::error::{Error, Result};
use crate::layout::{Layout, sync_dir, write_atomic};

/// Most symlinks followed while resolving one link target.
const MAX_LINK_DEPTH: usize = 40;

/// True when `builds/<buildId>` exists and its extraction finished.
pub fn is_extracted(layout: &Layout, build_id: &str) -> bool {
    layout.build_marker(build_id).is_file() && layout.build_dir(build_id).is_dir()
}

/// Extracts `archive` into `builds/<buildId>/` (temp dir, rename, marker).
pub fn extract_build(archive: &Path, layout: &Layout, build_id: &str) -> Result<()> {
    let builds = layout.builds_dir();
    let tmp = builds.join(format!(".{build_id}.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::io("cannot remove", &tmp, e))?;
    }
    fs::create_dir(&tmp).map_err(|e| Error::io("cannot create", &tmp, e))?;
    if let Err(e) = unpack(archive, &tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let marker = layout.build_marker(build_id);
    let dest = layout.build_dir(build_id);
    let _ = fs::remove_file(&marker);
    if fs::symlink_metadata(&dest).is_ok() {
        // An earlier, incomplete extraction (no marker): replace it.
        fs::remove_dir_all(&dest).map_err(|e| Error::io("cannot remove incomplete build", &dest, e))?;
    }
    fs::rename(&tmp, &dest).map_err(|e| Error::io("cannot move build into place", &dest, e))?;
    sync_dir(&builds)?;
    write_atomic(&marker, build_id.as_bytes())
}

/// Unpacks `archive` into the existing directory `dest`, refusing unsafe entries.
pub fn unpack(archive: &Path, dest: &Path) -> Result<()> {
    let mut file = File::open(archive).map_err(|e| Error::io("cannot open archive", archive, e))?;
    let mut magic = [0u8; 3];
    let n = file.read(&mut magic).map_err(|e| Error::io("cannot read archive", archive, e))?;
    let file = File::open(archive).map_err(|e| Error::io("cannot open archive", archive, e))?;
    let reader: Box<dyn Read> = match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::GzDecoder::new(BufReader::new(file))),
        [b'B', b'Z', b'h'] => return Err(Error::Archive("bzip2 archives are not supported (use tar.gz)".into())),
        [b'P', b'K', ..] => return Err(Error::Archive("zip archives are not supported (use tar.gz)".into())),
        _ => Box::new(BufReader::new(file)),
    };
    let mut ar = tar::Archive::new(reader);
    let entries = ar.entries().map_err(|e| Error::Archive(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::Archive(e.to_string()))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refuse = |reason: &str| Error::UnsafeEntry { entry: name.clone(), reason: reason.to_string() };
        let rel = safe_relative(&entry.path_bytes()).map_err(&refuse)?;
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        if rel.as_os_str().is_empty() {
            if kind == EntryType::Directory {
                continue;
            }
            return Err(refuse("empty path"));
        }
        let path = dest.join(&rel);
        match kind {
            EntryType::Directory => {
                make_dirs(dest, &rel, &name)?;
                set_mode(&path, mode | 0o700)?;
            }
            EntryType::Regular | EntryType::Continuous => {
                prepare_leaf(dest, &rel, &name)?;
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| Error::io("cannot create", &path, e))?;
                std::io::copy(&mut entry, &mut out).map_err(|e| Error::Archive(format!("entry {name:?}: {e}")))?;
                set_mode(&path, mode)?;
            }
            EntryType::Symlink => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                let target = PathBuf::from(OsStr::from_bytes(&target));
                if target.as_os_str().is_empty() {
                    return Err(refuse("symlink without a target"));
                }
                let parent = rel.parent().unwrap_or(Path::new(""));
                if resolves_outside(dest, parent, &target) {
                    return Err(refuse(&format!("symlink to {} points outside the build dir", target.display())));
                }
                prepare_leaf(dest, &rel, &name)?;
                std::os::unix::fs::symlink(&target, &path).map_err(|e| Error::io("cannot create symlink", &path, e))?;
            }
            EntryType::Link => return Err(refuse("hard links are not allowed")),
            EntryType::Char | EntryType::Block => return Err(refuse("device files are not allowed")),
            EntryType::Fifo => return Err(refuse("fifos are not allowed")),
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink => {}
            other => return Err(refuse(&format!("unsupported entry type {other:?}"))),
        }
    }
    verify_links(dest, dest)
}

/// The entry path as relative components; refuses absolute paths and `..`.
fn safe_relative(bytes: &[u8]) -> std::result::Result<PathBuf, &'static str> {
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

/// Creates the directories of `rel` under `dest`, refusing to pass through a symlink or file.
fn make_dirs(dest: &Path, rel: &Path, name: &str) -> Result<()> {
    let mut cur = dest.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::UnsafeEntry { entry: name.into(), reason: "path goes through a symlink".into() });
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::UnsafeEntry { entry: name.into(), reason: "path goes through a file".into() });
            }
            Err(_) => fs::create_dir(&cur).map_err(|e| Error::io("cannot create", &cur, e))?,
        }
    }
    Ok(())
}

/// Makes the parent directories of a file or link entry and removes a file or link it
/// replaces (a later entry wins, as with `tar`); never replaces a directory.
fn prepare_leaf(dest: &Path, rel: &Path, name: &str) -> Result<()> {
    if let Some(parent) = rel.parent() {
        make_dirs(dest, parent, name)?;
    }
    let path = dest.join(rel);
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => {
            Err(Error::UnsafeEntry { entry: name.into(), reason: "would replace a directory".into() })
        }
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

/// Checks every symlink of the finished tree (a later link can make an earlier one escape).
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
                return Err(Error::UnsafeEntry {
                    entry: rel.display().to_string(),
                    reason: format!("symlink to {} resolves outside the build dir", target.display()),
                });
            }
        }
    }
    Ok(())
}
