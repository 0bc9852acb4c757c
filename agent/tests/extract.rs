//! Extraction of tar archives: a good archive extracts; every hostile kind is refused, the
//! error names the entry, and nothing outside the build dir changes; the size and entry limits
//! and cancellation leave nothing behind either.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use agent::Error;
use agent::extract::{Limits, is_extracted};
use agent::layout::Layout;
use agent::testutil::{TempDir, listing};
use tar::{EntryType, Header};

enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    Special(&'a str, EntryType),
}

/// Writes names byte for byte into the header (the builder's own setters refuse hostile
/// paths, which is exactly what these tests need to produce).
fn raw_header(name: &str, kind: EntryType, size: u64, mode: u32, link: Option<&str>) -> Header {
    let mut h = Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

fn archive(path: &Path, entries: &[E], gzip: bool) {
    let mut data = Vec::new();
    {
        let mut b = tar::Builder::new(&mut data);
        for e in entries {
            let (h, body): (Header, &[u8]) = match e {
                E::Dir(n) => (raw_header(n, EntryType::Directory, 0, 0o755, None), b""),
                E::File(n, body, mode) => (raw_header(n, EntryType::Regular, body.len() as u64, *mode, None), body),
                E::Symlink(n, t) => (raw_header(n, EntryType::Symlink, 0, 0o777, Some(t)), b""),
                E::HardLink(n, t) => (raw_header(n, EntryType::Link, 0, 0o644, Some(t)), b""),
                E::Special(n, k) => (raw_header(n, *k, 0, 0o644, None), b""),
            };
            b.append(&h, body).unwrap();
        }
        b.finish().unwrap();
    }
    if gzip {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&data).unwrap();
        data = enc.finish().unwrap();
    }
    std::fs::write(path, data).unwrap();
}

fn extract_build(archive: &Path, layout: &Layout, id: &str) -> agent::error::Result<()> {
    agent::extract::extract_build(archive, layout, id, Limits::default(), &AtomicBool::new(false))
}

struct Setup {
    root: TempDir,
    layout: Layout,
    archive: PathBuf,
}

fn setup(entries: &[E]) -> Setup {
    let root = TempDir::new("extract");
    let layout = Layout::new(root.path().join("base"));
    layout.create_dirs().unwrap();
    std::fs::create_dir_all(root.path().join("outside")).unwrap();
    std::fs::write(root.path().join("outside/keep.txt"), "precious").unwrap();
    std::fs::write(layout.builds_dir().join("neighbour"), "n").unwrap();
    let archive = root.path().join("in.tar.gz");
    archive_at(&archive, entries);
    Setup { root, layout, archive }
}

fn archive_at(path: &Path, entries: &[E]) {
    archive(path, entries, true);
}

fn assert_refused(entries: &[E], entry: &str) {
    let s = setup(entries);
    let before = listing(s.root.path());
    let err = extract_build(&s.archive, &s.layout, "b1").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::UnsafeEntry { .. }), "{msg}");
    assert!(err.is_permanent());
    assert!(msg.contains(entry), "error should name {entry:?}: {msg}");
    assert_eq!(listing(s.root.path()), before, "nothing may change after a refused archive ({msg})");
    assert!(!is_extracted(&s.layout, "b1"));
}

#[test]
fn good_archive_extracts_with_modes_and_inner_links() {
    let s = setup(&[
        E::Dir("./"),
        E::Dir("./teletraan/"),
        E::File("./teletraan/RESTARTING", b"#!/bin/sh\necho hi\n", 0o4755),
        E::File("bin/app", b"app", 0o644),
        E::Symlink("current", "bin/app"),
        E::Symlink("bin/self", "../bin"),
    ]);
    let before = listing(s.root.path());
    extract_build(&s.archive, &s.layout, "b1").unwrap();
    assert!(is_extracted(&s.layout, "b1"));
    let dir = s.layout.build_dir("b1");
    assert_eq!(std::fs::read(dir.join("current")).unwrap(), b"app");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("teletraan/RESTARTING")).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o755, "set-id bits are dropped");
    let after = listing(s.root.path());
    let changed: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    assert!(
        changed.iter().all(|l| l.starts_with("base/builds/b1/") || l.starts_with("base/builds/b1.extracted")),
        "only the build dir and its marker appear: {changed:?}"
    );
    assert!(before.iter().all(|l| after.contains(l)), "nothing disappears");
}

#[test]
fn plain_tar_extracts_too() {
    let root = TempDir::new("plain");
    let layout = Layout::new(root.path());
    layout.create_dirs().unwrap();
    let path = root.path().join("a.tar");
    archive(&path, &[E::File("x", b"1", 0o644)], false);
    extract_build(&path, &layout, "b2").unwrap();
    assert_eq!(std::fs::read(layout.build_dir("b2").join("x")).unwrap(), b"1");
}

#[test]
fn absolute_path_is_refused() {
    let outside = std::env::temp_dir().join("teletraan-agent-absolute-evil");
    let name = outside.to_string_lossy().into_owned();
    assert_refused(&[E::File("ok", b"1", 0o644), E::File(&name, b"evil", 0o644)], &name);
    assert!(!outside.exists());
}

#[test]
fn parent_dir_is_refused() {
    assert_refused(&[E::File("../../outside/evil", b"evil", 0o644)], "../../outside/evil");
    assert_refused(&[E::File("a/../../x", b"evil", 0o644)], "a/../../x");
}

#[test]
fn symlink_out_of_the_build_dir_is_refused() {
    assert_refused(&[E::Symlink("up", "../../../outside")], "up");
    assert_refused(&[E::Symlink("etc", "/etc")], "etc");
}

#[test]
fn chained_symlinks_that_escape_are_refused() {
    // Each link is harmless when written; together `x` resolves to the parent of the build dir.
    assert_refused(&[E::Dir("d"), E::Symlink("x", "d/l/.."), E::Symlink("d/l", "..")], "x");
}

#[test]
fn writing_through_a_symlink_is_refused() {
    assert_refused(&[E::Dir("sub"), E::Symlink("s", "sub"), E::File("s/f", b"1", 0o644)], "s/f");
}

#[test]
fn hard_links_devices_and_fifos_are_refused() {
    assert_refused(&[E::File("a", b"1", 0o644), E::HardLink("h", "a")], "h");
    assert_refused(&[E::HardLink("passwd", "/etc/passwd")], "passwd");
    assert_refused(&[E::Special("fifo", EntryType::Fifo)], "fifo");
    assert_refused(&[E::Special("null", EntryType::Char)], "null");
    assert_refused(&[E::Special("sda", EntryType::Block)], "sda");
}

#[test]
fn garbage_is_an_archive_error_and_leaves_nothing() {
    let s = setup(&[]);
    std::fs::write(&s.archive, b"\x1f\x8bnot really gzip").unwrap();
    let before = listing(s.root.path());
    let err = extract_build(&s.archive, &s.layout, "b1").unwrap_err();
    assert!(matches!(err, Error::Archive(_)), "{err}");
    assert_eq!(listing(s.root.path()), before);
}

fn assert_limited(entries: &[E], limits: Limits, limit_name: &str) {
    let s = setup(entries);
    let before = listing(s.root.path());
    let err = agent::extract::extract_build(&s.archive, &s.layout, "b1", limits, &AtomicBool::new(false)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::ArchiveLimit(_)) && err.is_permanent(), "{msg}");
    assert!(msg.contains(limit_name), "the error names the limit: {msg}");
    assert_eq!(listing(s.root.path()), before, "nothing may change after a refused archive ({msg})");
}

#[test]
fn too_many_entries_is_refused() {
    let files: Vec<String> = (0..11).map(|i| format!("f{i}")).collect();
    let entries: Vec<E> = files.iter().map(|f| E::File(f, b"x", 0o644)).collect();
    assert_limited(&entries, Limits { max_bytes: 1 << 20, max_entries: 10 }, "archive_max_entries");
    let s = setup(&entries[..10]);
    let limits = Limits { max_bytes: 1 << 20, max_entries: 10 };
    agent::extract::extract_build(&s.archive, &s.layout, "b1", limits, &AtomicBool::new(false)).unwrap();
}

#[test]
fn too_many_bytes_is_refused_even_when_well_compressed() {
    // 64 KiB of zeros gzip to almost nothing: the limit is on what the archive expands to.
    let zeros = vec![0u8; 64 * 1024];
    let limits = Limits { max_bytes: 100_000, max_entries: 100 };
    assert_limited(&[E::File("a", &zeros, 0o644), E::File("b", &zeros, 0o644)], limits, "archive_max_bytes");
    let s = setup(&[E::File("a", &zeros, 0o644)]);
    agent::extract::extract_build(&s.archive, &s.layout, "b1", limits, &AtomicBool::new(false)).unwrap();
}

#[test]
fn a_cancelled_extraction_leaves_nothing() {
    let s = setup(&[E::File("a", b"1", 0o644)]);
    let before = listing(s.root.path());
    let cancel = AtomicBool::new(true);
    let err = agent::extract::extract_build(&s.archive, &s.layout, "b1", Limits::default(), &cancel).unwrap_err();
    assert!(matches!(err, Error::Aborted), "{err}");
    assert_eq!(listing(s.root.path()), before);
}

#[test]
fn leftovers_of_a_killed_extraction_are_replaced() {
    let s = setup(&[E::File("a", b"1", 0o644)]);
    // What an agent killed mid-extraction leaves: a temp dir, and maybe a build dir without marker.
    std::fs::create_dir_all(s.layout.builds_dir().join(".b1.tmp-999-0/half")).unwrap();
    std::fs::create_dir_all(s.layout.build_dir("b1").join("stale")).unwrap();
    extract_build(&s.archive, &s.layout, "b1").unwrap();
    assert!(is_extracted(&s.layout, "b1"));
    assert!(!s.layout.builds_dir().join(".b1.tmp-999-0").exists());
    assert!(!s.layout.build_dir("b1").join("stale").exists());
}

#[test]
fn bzip2_is_refused_clearly() {
    let s = setup(&[]);
    std::fs::write(&s.archive, b"BZh91AY&SY").unwrap();
    let before = listing(s.root.path());
    let err = extract_build(&s.archive, &s.layout, "b1").unwrap_err();
    assert!(matches!(err, Error::UnsupportedFormat(_)) && err.is_permanent(), "{err}");
    assert!(err.to_string().contains("bzip2"), "{err}");
    assert_eq!(listing(s.root.path()), before);
}
