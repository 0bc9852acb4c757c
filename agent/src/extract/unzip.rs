//! zip entries into a [`Tree`]. The entry's kind comes from the unix mode in its external
//! attributes (zip carries symlinks, devices and fifos that way); without one, a name ending in
//! `/` is a directory and anything else a regular file.

use std::fs::File;
use std::io::Read;

use zip::CompressionMethod;

use super::Limits;
use super::tree::{Tree, refuse, too_many_bytes, too_many_entries};
use crate::error::{Error, Result};

/// Longest symlink target read from an entry (the kernel's `PATH_MAX`).
const MAX_LINK_TARGET: u64 = 4096;

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;
const S_IFIFO: u32 = 0o010000;
const S_IFSOCK: u32 = 0o140000;

/// Unpacks every entry of the zip `file` into `tree`. The central directory is checked
/// against the limits first, so a zip bomb is refused before anything is written.
pub(super) fn unpack(file: File, tree: &mut Tree<'_>, limits: Limits) -> Result<()> {
    let mut ar = zip::ZipArchive::new(file).map_err(|e| Error::Archive(format!("zip: {e}")))?;
    if ar.len() as u64 > limits.max_entries {
        return Err(too_many_entries(limits.max_entries));
    }
    let mut declared: u64 = 0;
    for i in 0..ar.len() {
        let entry = ar.by_index_raw(i).map_err(|e| Error::Archive(format!("zip entry #{i}: {e}")))?;
        declared = declared.saturating_add(entry.size());
    }
    if declared > limits.max_bytes {
        return Err(too_many_bytes(limits.max_bytes));
    }
    for i in 0..ar.len() {
        tree.count_entry()?;
        let raw_entry = ar.by_index_raw(i).map_err(|e| Error::Archive(format!("zip entry #{i}: {e}")))?;
        let raw = raw_entry.name_raw().to_vec();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let method = raw_entry.compression();
        let encrypted = raw_entry.encrypted();
        drop(raw_entry);
        if encrypted {
            return Err(Error::UnsupportedFormat(format!("zip entry {name:?} is encrypted")));
        }
        if !matches!(method, CompressionMethod::Stored | CompressionMethod::Deflated) {
            return Err(Error::UnsupportedFormat(format!(
                "zip entry {name:?} uses compression {method}, only stored and deflate are supported"
            )));
        }
        let mut entry = ar.by_index(i).map_err(|e| Error::Archive(format!("zip entry {name:?}: {e}")))?;
        let rel = tree.relative(&name, &raw)?;
        let mode = entry.unix_mode();
        let perm = mode.map(|m| m & 0o7777).unwrap_or(0o644);
        let kind = match mode.map(|m| m & S_IFMT) {
            _ if raw.ends_with(b"/") => S_IFDIR,
            None | Some(0) => S_IFREG,
            Some(k) => k,
        };
        if rel.as_os_str().is_empty() {
            if kind == S_IFDIR {
                continue;
            }
            return Err(refuse(&name, "empty path"));
        }
        match kind {
            S_IFDIR => tree.dir(&name, &rel, perm)?,
            S_IFREG => {
                tree.check_declared(entry.size())?;
                tree.file(&name, &rel, perm, &mut entry)?;
            }
            S_IFLNK => {
                let mut target = Vec::new();
                (&mut entry)
                    .take(MAX_LINK_TARGET + 1)
                    .read_to_end(&mut target)
                    .map_err(|e| Error::Archive(format!("zip entry {name:?}: {e}")))?;
                if target.len() as u64 > MAX_LINK_TARGET {
                    return Err(refuse(&name, "symlink target longer than 4096 bytes"));
                }
                tree.symlink(&name, &rel, &target)?;
            }
            S_IFCHR | S_IFBLK => return Err(refuse(&name, "device files are not allowed")),
            S_IFIFO => return Err(refuse(&name, "fifos are not allowed")),
            S_IFSOCK => return Err(refuse(&name, "sockets are not allowed")),
            other => return Err(refuse(&name, &format!("unsupported file type {other:o}"))),
        }
    }
    Ok(())
}
