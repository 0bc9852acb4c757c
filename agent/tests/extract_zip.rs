//! Extraction of zip archives: a good zip (deflate and stored entries, directories, modes, an
//! inner symlink) extracts; every hostile kind is refused with the entry named and nothing
//! outside the build dir changed; zip bombs are refused by the limits before anything is
//! written.
//!
//! Hostile archives are written byte by byte ([`RawZip`]): zip writers refuse to produce them,
//! which is exactly what these tests need.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use agent::Error;
use agent::extract::{Limits, extract_build, is_extracted};
use agent::layout::Layout;
use agent::testutil::{TempDir, listing};

const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;
const S_IFIFO: u32 = 0o010000;
const S_IFSOCK: u32 = 0o140000;

/// A zip of stored entries with any name and any unix mode.
#[derive(Default)]
struct RawZip {
    data: Vec<u8>,
    central: Vec<u8>,
    count: u16,
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

impl RawZip {
    fn entry(self, name: &str, mode: u32, body: &[u8]) -> RawZip {
        self.entry_with(name, mode, body, 0, 0)
    }

    /// An entry with these general-purpose `flags` and compression `method` in its headers
    /// (the body is stored as given).
    fn entry_with(mut self, name: &str, mode: u32, body: &[u8], flags: u16, method: u16) -> RawZip {
        let offset = self.data.len() as u32;
        let (crc, len, name_len) = (crc32(body), body.len() as u32, name.len() as u16);
        let d = &mut self.data;
        d.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        for v in [20u16, flags, method, 0, 0x21] {
            d.extend_from_slice(&v.to_le_bytes()); // version, flags, method, time, date
        }
        for v in [crc, len, len] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        d.extend_from_slice(&name_len.to_le_bytes());
        d.extend_from_slice(&0u16.to_le_bytes());
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(body);
        let c = &mut self.central;
        c.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        for v in [(3u16 << 8) | 20, 20, flags, method, 0, 0x21] {
            c.extend_from_slice(&v.to_le_bytes()); // made by unix, needed, flags, method, time, date
        }
        for v in [crc, len, len] {
            c.extend_from_slice(&v.to_le_bytes());
        }
        for v in [name_len, 0, 0, 0, 0] {
            c.extend_from_slice(&v.to_le_bytes()); // name, extra, comment, disk, internal attrs
        }
        c.extend_from_slice(&(mode << 16).to_le_bytes());
        c.extend_from_slice(&offset.to_le_bytes());
        c.extend_from_slice(name.as_bytes());
        self.count += 1;
        self
    }

    fn file(self, name: &str, body: &[u8]) -> RawZip {
        self.entry(name, S_IFREG | 0o644, body)
    }

    fn bytes(mut self) -> Vec<u8> {
        let (cd_offset, cd_len) = (self.data.len() as u32, self.central.len() as u32);
        self.data.extend_from_slice(&self.central);
        self.data.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        for v in [0u16, 0, self.count, self.count] {
            self.data.extend_from_slice(&v.to_le_bytes());
        }
        self.data.extend_from_slice(&cd_len.to_le_bytes());
        self.data.extend_from_slice(&cd_offset.to_le_bytes());
        self.data.extend_from_slice(&0u16.to_le_bytes());
        self.data
    }
}

struct Setup {
    root: TempDir,
    layout: Layout,
    archive: PathBuf,
}

fn setup(zip: Vec<u8>) -> Setup {
    let root = TempDir::new("unzip");
    let layout = Layout::new(root.path().join("base"));
    layout.create_dirs().unwrap();
    std::fs::create_dir_all(root.path().join("outside")).unwrap();
    std::fs::write(root.path().join("outside/keep.txt"), "precious").unwrap();
    std::fs::write(layout.builds_dir().join("neighbour"), "n").unwrap();
    let archive = root.path().join("in.zip");
    std::fs::write(&archive, zip).unwrap();
    Setup { root, layout, archive }
}

fn extract(s: &Setup, limits: Limits) -> agent::error::Result<()> {
    extract_build(&s.archive, &s.layout, "b1", limits, &AtomicBool::new(false))
}

fn assert_refused(zip: RawZip, entry: &str) {
    let s = setup(zip.bytes());
    let before = listing(s.root.path());
    let err = extract(&s, Limits::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::UnsafeEntry { .. }), "{msg}");
    assert!(err.is_permanent());
    assert!(msg.contains(entry), "error should name {entry:?}: {msg}");
    assert_eq!(listing(s.root.path()), before, "nothing may change after a refused archive ({msg})");
    assert!(!is_extracted(&s.layout, "b1"));
}

/// A zip made by the `zip` crate's writer: deflate and stored entries, a directory, an
/// executable hook, an inner symlink.
fn good_zip() -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let deflated = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.add_directory("teletraan/", stored.unix_permissions(0o755)).unwrap();
    w.start_file("teletraan/RESTARTING", deflated.unix_permissions(0o755)).unwrap();
    w.write_all(b"#!/bin/sh\necho restarted\n").unwrap();
    w.start_file("bin/app", deflated.unix_permissions(0o644)).unwrap();
    w.write_all(&b"app ".repeat(1000)).unwrap();
    w.start_file("README", stored).unwrap();
    w.write_all(b"readme").unwrap();
    w.add_symlink("current", "bin/app", stored).unwrap();
    w.finish().unwrap().into_inner()
}

#[test]
fn good_zip_extracts_with_modes_and_inner_links() {
    let s = setup(good_zip());
    let before = listing(s.root.path());
    extract(&s, Limits::default()).unwrap();
    assert!(is_extracted(&s.layout, "b1"));
    let dir = s.layout.build_dir("b1");
    assert_eq!(std::fs::read(dir.join("current")).unwrap(), b"app ".repeat(1000));
    assert!(std::fs::symlink_metadata(dir.join("current")).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(dir.join("README")).unwrap(), "readme");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("teletraan/RESTARTING")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    let after = listing(s.root.path());
    let changed: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    assert!(
        changed.iter().all(|l| l.starts_with("base/builds/b1/") || l.starts_with("base/builds/b1.extracted")),
        "only the build dir and its marker appear: {changed:?}"
    );
    assert!(before.iter().all(|l| after.contains(l)), "nothing disappears");
}

#[test]
fn set_id_bits_are_dropped_and_plain_names_without_mode_are_files() {
    let zip = RawZip::default().entry("suid", S_IFREG | 0o4755, b"x").entry("dir/", 0, b"").entry("dir/f", 0, b"f");
    let s = setup(zip.bytes());
    extract(&s, Limits::default()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let dir = s.layout.build_dir("b1");
    assert_eq!(std::fs::metadata(dir.join("suid")).unwrap().permissions().mode() & 0o7777, 0o755);
    assert_eq!(std::fs::read_to_string(dir.join("dir/f")).unwrap(), "f");
}

#[test]
fn absolute_path_is_refused() {
    let outside = std::env::temp_dir().join("teletraan-agent-zip-absolute-evil");
    let name = outside.to_string_lossy().into_owned();
    assert_refused(RawZip::default().file("ok", b"1").file(&name, b"evil"), &name);
    assert!(!outside.exists());
}

#[test]
fn parent_dir_is_refused() {
    assert_refused(RawZip::default().file("../../outside/evil", b"evil"), "../../outside/evil");
    assert_refused(RawZip::default().file("a/../../x", b"evil"), "a/../../x");
}

#[test]
fn symlink_out_of_the_build_dir_is_refused() {
    assert_refused(RawZip::default().entry("up", S_IFLNK | 0o777, b"../../../outside"), "up");
    assert_refused(RawZip::default().entry("etc", S_IFLNK | 0o777, b"/etc"), "etc");
}

#[test]
fn chained_symlinks_that_escape_are_refused() {
    let zip = RawZip::default().entry("d/", S_IFDIR | 0o755, b"").entry("x", S_IFLNK | 0o777, b"d/l/..").entry(
        "d/l",
        S_IFLNK | 0o777,
        b"..",
    );
    assert_refused(zip, "x");
}

#[test]
fn writing_through_a_symlink_is_refused() {
    let zip =
        RawZip::default().entry("sub/", S_IFDIR | 0o755, b"").entry("s", S_IFLNK | 0o777, b"sub").file("s/f", b"1");
    assert_refused(zip, "s/f");
}

#[test]
fn devices_fifos_and_sockets_are_refused() {
    assert_refused(RawZip::default().file("a", b"1").entry("null", S_IFCHR | 0o666, b""), "null");
    assert_refused(RawZip::default().entry("sda", S_IFBLK | 0o660, b""), "sda");
    assert_refused(RawZip::default().entry("fifo", S_IFIFO | 0o644, b""), "fifo");
    assert_refused(RawZip::default().entry("sock", S_IFSOCK | 0o644, b""), "sock");
}

fn assert_limited(zip: Vec<u8>, limits: Limits, limit_name: &str) {
    let s = setup(zip);
    let before = listing(s.root.path());
    let err = extract(&s, limits).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::ArchiveLimit(_)) && err.is_permanent(), "{msg}");
    assert!(msg.contains(limit_name), "the error names the limit: {msg}");
    assert_eq!(listing(s.root.path()), before, "nothing may change after a refused archive ({msg})");
}

#[test]
fn zip_bombs_are_refused_by_the_limits() {
    // 1 MiB of zeros deflates to about 1 KiB.
    use zip::write::SimpleFileOptions;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file("zeros", SimpleFileOptions::default()).unwrap();
    w.write_all(&vec![0u8; 1 << 20]).unwrap();
    let bomb = w.finish().unwrap().into_inner();
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    assert_limited(bomb.clone(), Limits { max_bytes: 1 << 19, max_entries: 10 }, "archive_max_bytes");
    let s = setup(bomb);
    extract(&s, Limits { max_bytes: 1 << 20, max_entries: 10 }).unwrap();

    let mut many = RawZip::default();
    for i in 0..11 {
        many = many.file(&format!("f{i}"), b"");
    }
    assert_limited(many.bytes(), Limits { max_bytes: 1 << 20, max_entries: 10 }, "archive_max_entries");
}

#[test]
fn garbage_and_truncated_zips_are_archive_errors_and_leave_nothing() {
    let good = good_zip();
    for bytes in [b"PK\x03\x04 not a zip at all".to_vec(), good[..good.len() - 30].to_vec()] {
        let s = setup(bytes);
        let before = listing(s.root.path());
        let err = extract(&s, Limits::default()).unwrap_err();
        assert!(matches!(err, Error::Archive(_)), "{err}");
        assert_eq!(listing(s.root.path()), before);
    }
}

#[test]
fn encrypted_entries_and_other_compressions_are_refused() {
    for (zip, what) in [
        (RawZip::default().file("ok", b"1").entry_with("secret", S_IFREG | 0o644, b"xxxx", 1, 0), "encrypted"),
        (RawZip::default().entry_with("bz", S_IFREG | 0o644, b"xxxx", 0, 12), "only stored and deflate"),
    ] {
        let s = setup(zip.bytes());
        let before = listing(s.root.path());
        let err = extract(&s, Limits::default()).unwrap_err();
        assert!(matches!(err, Error::UnsupportedFormat(_)) && err.is_permanent(), "{err}");
        assert!(err.to_string().contains(what), "{err}");
        assert_eq!(listing(s.root.path()), before);
    }
}

#[test]
fn a_corrupted_entry_is_an_error_and_leaves_nothing() {
    let mut bytes = RawZip::default().file("a", b"hello world").bytes();
    // Flip a byte of the stored data: the CRC no longer matches.
    let at = bytes.windows(5).position(|w| w == b"hello").unwrap();
    bytes[at] = b'j';
    let s = setup(bytes);
    let before = listing(s.root.path());
    let err = extract(&s, Limits::default()).unwrap_err();
    assert!(matches!(err, Error::Archive(_)), "{err}");
    assert!(err.to_string().contains("\"a\""), "names the entry: {err}");
    assert_eq!(listing(s.root.path()), before);
}
