//! Safe extraction of a build archive (tar, gzip-compressed tar, or zip) into
//! `builds/<buildId>/`.
//!
//! The archive is unpacked into a temp directory beside the build dir and renamed into place
//! only when complete; then the marker `builds/<buildId>.extracted` is written. Refused, with
//! the entry named in the error: absolute paths, `..`, NUL bytes, symlinks whose target
//! resolves outside the build dir (checked again on the finished tree, following links, so a
//! chain of links cannot escape), writing through a symlink or a file, hard links, device
//! files, fifos and sockets. Set-id bits are dropped. An archive with more entries or more
//! expanded bytes than the [`Limits`] is refused, naming the limit. Nothing is ever written
//! outside the temp directory; a refused, failed or cancelled extraction removes it. With a
//! hook user, the finished tree is given to that user before it is renamed into place.

mod tree;
mod untar;
mod unzip;

use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::error::{Error, Result};
use crate::layout::{Layout, sync_dir, write_atomic};
use crate::ownership::{Owner, give_tree};

/// How much one archive may expand to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of file content, all entries together.
    pub max_bytes: u64,
    /// Most entries (files, directories and links).
    pub max_entries: u64,
}

impl Default for Limits {
    /// 20 GiB and 1,000,000 entries: far above any real build, far below a full disk.
    fn default() -> Limits {
        Limits { max_bytes: 20 * 1024 * 1024 * 1024, max_entries: 1_000_000 }
    }
}

/// The formats the agent reads, told from the first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A tar stream, not compressed.
    Tar,
    /// A gzip-compressed tar stream.
    TarGz,
    /// A zip archive.
    Zip,
}

/// True when `builds/<buildId>` exists and its extraction finished.
pub fn is_extracted(layout: &Layout, build_id: &str) -> bool {
    layout.build_marker(build_id).is_file() && layout.build_dir(build_id).is_dir()
}

/// Extracts `archive` into `builds/<buildId>/` (temp dir, rename, marker). Stops with
/// [`Error::Aborted`] soon after `cancel` is set, leaving nothing behind.
pub fn extract_build(
    archive: &Path,
    layout: &Layout,
    build_id: &str,
    limits: Limits,
    cancel: &AtomicBool,
) -> Result<()> {
    extract_build_for(archive, layout, build_id, limits, cancel, None)
}

/// [`extract_build`], then, with an `owner`, the whole build given to it while it is still in
/// its temp dir (which only the agent can reach): the build appears already owned.
pub fn extract_build_for(
    archive: &Path,
    layout: &Layout,
    build_id: &str,
    limits: Limits,
    cancel: &AtomicBool,
    owner: Option<Owner>,
) -> Result<()> {
    static N: AtomicU32 = AtomicU32::new(0);
    let builds = layout.builds_dir();
    remove_stale_temp_dirs(&builds, build_id);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let tmp = builds.join(format!(".{build_id}.tmp-{}-{n}", std::process::id()));
    fs::create_dir(&tmp).map_err(|e| Error::io("cannot create", &tmp, e))?;
    let unpacked = unpack(archive, &tmp, limits, cancel).and_then(|()| match owner {
        Some(o) => give_tree(&tmp, o),
        None => Ok(()),
    });
    if let Err(e) = unpacked {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let marker = layout.build_marker(build_id);
    let dest = layout.build_dir(build_id);
    let _ = fs::remove_file(&marker);
    if fs::symlink_metadata(&dest).is_ok() {
        // An earlier, incomplete extraction (no marker): replace it.
        if let Err(e) = fs::remove_dir_all(&dest) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(Error::io("cannot remove incomplete build", &dest, e));
        }
    }
    if let Err(e) = fs::rename(&tmp, &dest) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(Error::io("cannot move build into place", &dest, e));
    }
    sync_dir(&builds)?;
    write_atomic(&marker, build_id.as_bytes())
}

/// Temp dirs of this build left by an agent that was killed while extracting.
fn remove_stale_temp_dirs(builds: &Path, build_id: &str) {
    let prefix = format!(".{build_id}.tmp-");
    let Ok(rd) = fs::read_dir(builds) else { return };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// The format of `archive`, from its first bytes; bzip2 and anything unknown but tar are
/// refused.
pub fn detect(archive: &Path) -> Result<Format> {
    let mut file = File::open(archive).map_err(|e| Error::io("cannot open archive", archive, e))?;
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < magic.len() {
        match file.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(Error::io("cannot read archive", archive, e)),
        }
    }
    match &magic[..n] {
        [0x1f, 0x8b, ..] => Ok(Format::TarGz),
        [b'B', b'Z', b'h', ..] => Err(Error::UnsupportedFormat("bzip2 (use tar.gz, tar or zip)".into())),
        [b'P', b'K', 3, 4] | [b'P', b'K', 5, 6] => Ok(Format::Zip),
        _ => Ok(Format::Tar),
    }
}

/// Unpacks `archive` into the existing empty directory `dest`, refusing unsafe entries and
/// archives past `limits`.
pub fn unpack(archive: &Path, dest: &Path, limits: Limits, cancel: &AtomicBool) -> Result<()> {
    let format = detect(archive)?;
    let file = File::open(archive).map_err(|e| Error::io("cannot open archive", archive, e))?;
    let mut tree = tree::Tree::new(dest, limits, cancel);
    match format {
        Format::Zip => unzip::unpack(file, &mut tree, limits)?,
        Format::TarGz => untar::unpack(Box::new(flate2::read::GzDecoder::new(BufReader::new(file))), &mut tree)?,
        Format::Tar => untar::unpack(Box::new(BufReader::new(file)), &mut tree)?,
    }
    tree.finish()
}
