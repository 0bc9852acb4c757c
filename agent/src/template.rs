//! Config templates rendered at STAGING, as Teletraan's agent does (`staging/transformer.py`).
//!
//! When the env has script variables and the build has a `teletraan/` directory, that
//! directory is copied once to `teletraan_template/`; then every `*.tmpl` file under the
//! template directory is rendered into `teletraan/` with `.tmpl` removed (so a hook can be a
//! template: `RESTARTING.tmpl` becomes `RESTARTING`). The values come from
//! `<env>_SCRIPT_CONFIG`, read as Teletraan reads it.
//!
//! Syntax, for a script variable `KEY`: `${TELETRAAN_KEY}`, `{$TELETRAAN_KEY}`,
//! `$TELETRAAN_{KEY}` and `$TELETRAAN_KEY`; with a default, `${TELETRAAN_KEY:default}` and
//! `{$TELETRAAN_KEY:default}` (the default runs to the first `}` on the line). An unknown key
//! without a default is left as written; `${TELETRAAN_X:}` gives an empty string. Rendering is
//! one pass: a value that itself looks like a placeholder is not expanded again.
//!
//! Rendering never reads or writes outside the build dir: a template, a directory or an
//! output whose real path leaves it is refused, and outputs are written to a temp file renamed
//! over the destination, so a symlink there is replaced, never written through.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The hook directory of a build.
pub const SCRIPT_DIR: &str = "teletraan";
/// The pristine copy of [`SCRIPT_DIR`] that templates are rendered from.
pub const TEMPLATE_DIR: &str = "teletraan_template";
/// Suffix of a template file.
pub const SUFFIX: &str = ".tmpl";

/// Reads `<env>_SCRIPT_CONFIG` as Teletraan does: `key=value` lines split at the first `=`,
/// both sides stripped of spaces, quotes and newlines; lines without `=` are skipped. A
/// missing file gives no variables.
pub fn read_script_config(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(Error::io("cannot read", path, e)),
    };
    let strip = |s: &str| s.trim_matches(|c| matches!(c, '"' | '\'' | ' ' | '\n' | '\r')).to_string();
    Ok(text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (strip(k), strip(v))).collect())
}

/// Renders the placeholders of `text` with `vars`.
pub fn render(text: &[u8], vars: &BTreeMap<String, String>) -> Vec<u8> {
    render_counted(text, vars).0
}

/// [`render`], and the bytes of the text it read to do so: positions tried, keys and
/// defaults scanned. Rendering is linear: fewer than [`WORK_PER_BYTE`] × the text's length
/// (plus one), whatever the text (the unit tests and agent/tests/fuzz.rs check it).
pub fn render_counted(text: &[u8], vars: &BTreeMap<String, String>) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(text.len());
    let (mut i, mut copied) = (0, 0);
    let mut closer = Closer { text, from: 0, at: None, known: false, read: 0 };
    let mut read = 0;
    while i < text.len() {
        read += 1;
        let Some((end, value)) = placeholder(&text[i..], i, vars, &mut closer, &mut read) else {
            i += 1;
            continue;
        };
        out.extend_from_slice(&text[copied..i]);
        match value {
            Some(v) => out.extend_from_slice(v),
            None => out.extend_from_slice(&text[i..i + end]),
        }
        i += end;
        copied = i;
    }
    out.extend_from_slice(&text[copied..]);
    (out, read + closer.read)
}

/// The bound on [`render_counted`]'s work per byte of text: each position is tried once, a
/// key is scanned from at most two placeholder openings ending just before it, and the
/// search for defaults' closing `}` reads each byte once.
pub const WORK_PER_BYTE: usize = 4;

/// Where the first `}` or newline at or after a position of the text is. Every default looks
/// for one; remembering the last answer keeps a long line of unclosed defaults from being
/// scanned again for each of them (quadratic time: minutes for a template of a megabyte).
struct Closer<'t> {
    text: &'t [u8],
    from: usize,
    at: Option<usize>,
    known: bool,
    /// Bytes scanned so far.
    read: usize,
}

impl Closer<'_> {
    fn find(&mut self, from: usize) -> Option<usize> {
        // The first stop after `self.from` is also the first after any later position up to it.
        if self.known && from >= self.from && self.at.is_none_or(|at| at >= from) {
            return self.at;
        }
        let at = self.text[from..].iter().position(|c| *c == b'}' || *c == b'\n').map(|p| from + p);
        self.read += at.map_or(self.text.len(), |at| at + 1) - from;
        (self.from, self.at, self.known) = (from, at, true);
        at
    }
}

/// A placeholder at the start of `s`, which is at `offset` in the text `closer` reads: its
/// length and its value (`None`: unknown key, no default, so it stays as written). Adds the
/// key bytes it scanned to `read`.
fn placeholder<'a>(
    s: &'a [u8],
    offset: usize,
    vars: &'a BTreeMap<String, String>,
    closer: &mut Closer<'_>,
    read: &mut usize,
) -> Option<(usize, Option<&'a [u8]>)> {
    let lookup = |key: &[u8]| std::str::from_utf8(key).ok().and_then(|k| vars.get(k)).map(|v| v.as_bytes());
    for open in [&b"${TELETRAAN_"[..], b"{$TELETRAAN_"] {
        if let Some(rest) = s.strip_prefix(open) {
            let key_len = rest.iter().take_while(|c| is_key_byte(**c)).count();
            *read += key_len;
            let (key, after) = rest.split_at(key_len);
            if key.is_empty() {
                return None;
            }
            return match after.first() {
                Some(b'}') => Some((open.len() + key_len + 1, lookup(key))),
                Some(b':') => {
                    let default = &after[1..];
                    let close = closer.find(offset + open.len() + key_len + 1)? - (offset + open.len() + key_len + 1);
                    if default[close] != b'}' {
                        return None;
                    }
                    let value = lookup(key).unwrap_or(&default[..close]);
                    Some((open.len() + key_len + 2 + close, Some(value)))
                }
                _ => None,
            };
        }
    }
    let rest = s.strip_prefix(b"$TELETRAAN_")?;
    if let Some(braced) = rest.strip_prefix(b"{") {
        let key_len = braced.iter().take_while(|c| is_key_byte(**c)).count();
        *read += key_len;
        if key_len > 0 && braced.get(key_len) == Some(&b'}') {
            return Some((b"$TELETRAAN_{".len() + key_len + 1, lookup(&braced[..key_len])));
        }
        return None;
    }
    if !rest.first().is_some_and(u8::is_ascii_alphabetic) {
        return None;
    }
    let key_len = rest.iter().take_while(|c| is_key_byte(**c)).count();
    *read += key_len;
    Some((b"$TELETRAAN_".len() + key_len, lookup(&rest[..key_len])))
}

fn is_key_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// Renders the templates of the build at `build_dir` (see the module doc). Returns how many
/// files were rendered; 0 without variables or without a `teletraan/` directory.
pub fn render_build(build_dir: &Path, vars: &BTreeMap<String, String>) -> Result<usize> {
    if vars.is_empty() {
        return Ok(0);
    }
    let root = fs::canonicalize(build_dir).map_err(|e| Error::io("cannot resolve", build_dir, e))?;
    let scripts = root.join(SCRIPT_DIR);
    if fs::symlink_metadata(&scripts).is_err() {
        return Ok(0);
    }
    let scripts = inside(&root, &scripts)?;
    let templates = root.join(TEMPLATE_DIR);
    if fs::symlink_metadata(&templates).is_err() {
        copy_once(&root, &scripts, &templates)?;
    }
    let templates = inside(&root, &templates)?;
    let mut found = Vec::new();
    list_templates(&templates, Path::new(""), &mut found)?;
    for rel in &found {
        render_one(&root, &templates, rel, vars)?;
    }
    Ok(found.len())
}

/// The real path of `path`, refused when it is not under `root` (already canonical).
fn inside(root: &Path, path: &Path) -> Result<PathBuf> {
    let real = fs::canonicalize(path).map_err(|e| Error::io("cannot resolve", path, e))?;
    if real.starts_with(root) {
        Ok(real)
    } else {
        Err(Error::Template {
            path: path.strip_prefix(root).unwrap_or(path).display().to_string(),
            reason: format!("resolves to {}, outside the build dir", real.display()),
        })
    }
}

/// Copies `scripts` to `templates` through a temp dir renamed into place, so a crash never
/// leaves a half copy that would count as done.
fn copy_once(root: &Path, scripts: &Path, templates: &Path) -> Result<()> {
    let tmp = root.join(format!(".{TEMPLATE_DIR}.tmp"));
    let _ = fs::remove_dir_all(&tmp);
    if let Err(e) = copy_tree(scripts, &tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, templates).map_err(|e| Error::io("cannot move into place", templates, e))
}

/// Copies directories and regular files (with their modes); symlinks are recreated as they
/// are (every read through them is checked later).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir(to).map_err(|e| Error::io("cannot create", to, e))?;
    let rd = fs::read_dir(from).map_err(|e| Error::io("cannot list", from, e))?;
    for e in rd {
        let e = e.map_err(|e| Error::io("cannot list", from, e))?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ft = e.file_type().map_err(|err| Error::io("cannot stat", &src, err))?;
        if ft.is_dir() {
            copy_tree(&src, &dst)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&src).map_err(|err| Error::io("cannot read link", &src, err))?;
            std::os::unix::fs::symlink(&target, &dst).map_err(|err| Error::io("cannot create symlink", &dst, err))?;
        } else if ft.is_file() {
            fs::copy(&src, &dst).map_err(|err| Error::io("cannot copy to", &dst, err))?;
        }
    }
    Ok(())
}

/// Every `*.tmpl` under `dir` (real directories only), relative to the template dir.
fn list_templates(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let rd = fs::read_dir(dir).map_err(|e| Error::io("cannot list", dir, e))?;
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let name = e.file_name();
        let ft = e.file_type().map_err(|err| Error::io("cannot stat", &path, err))?;
        if ft.is_dir() {
            list_templates(&path, &rel.join(&name), out)?;
        } else if name.to_string_lossy().ends_with(SUFFIX) && name.len() > SUFFIX.len() {
            out.push(rel.join(name));
        }
    }
    Ok(())
}

fn render_one(root: &Path, templates: &Path, rel: &Path, vars: &BTreeMap<String, String>) -> Result<()> {
    let source = inside(root, &templates.join(rel))?;
    let meta = fs::metadata(&source).map_err(|e| Error::io("cannot stat", &source, e))?;
    if !meta.is_file() {
        return Ok(());
    }
    let text = fs::read(&source).map_err(|e| Error::io("cannot read", &source, e))?;
    let file_name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let out_name = file_name.strip_suffix(SUFFIX).unwrap_or(&file_name).to_string();
    let parent = out_dir(root, rel.parent().unwrap_or(Path::new("")))?;
    let dest = parent.join(&out_name);
    if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
        return Err(Error::Template {
            path: dest.strip_prefix(root).unwrap_or(&dest).display().to_string(),
            reason: "the output is a directory".into(),
        });
    }
    let tmp = parent.join(format!(".{out_name}.render-tmp"));
    let write = || -> std::io::Result<()> {
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(&render(&text, vars))?;
        f.sync_all()?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(meta.permissions().mode() & 0o777))?;
        fs::rename(&tmp, &dest)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("cannot render into", &dest, e)
    })?;
    tracing::info!(template = %rel.display(), output = %dest.display(), "rendered template");
    Ok(())
}

/// `teletraan/<rel>` as a real directory inside the build, created as needed; a component
/// that is a symlink must resolve inside the build.
fn out_dir(root: &Path, rel: &Path) -> Result<PathBuf> {
    let mut cur = root.join(SCRIPT_DIR);
    cur = inside(root, &cur)?;
    for c in rel.components() {
        let next = cur.join(c);
        match fs::symlink_metadata(&next) {
            Err(_) => fs::create_dir(&next).map_err(|e| Error::io("cannot create", &next, e))?,
            Ok(m) if m.is_file() => {
                return Err(Error::Template {
                    path: next.strip_prefix(root).unwrap_or(&next).display().to_string(),
                    reason: "is a file, a directory is needed".into(),
                });
            }
            Ok(_) => {}
        }
        cur = inside(root, &next)?;
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{TempDir, listing};

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn r(text: &str, v: &BTreeMap<String, String>) -> String {
        String::from_utf8(render(text.as_bytes(), v)).unwrap()
    }

    #[test]
    fn every_form_is_replaced() {
        let v = vars(&[("PORT", "8080"), ("Wh-O", "test2")]);
        assert_eq!(r("a ${TELETRAAN_PORT} b", &v), "a 8080 b");
        assert_eq!(r("a {$TELETRAAN_PORT} b", &v), "a 8080 b");
        assert_eq!(r("a $TELETRAAN_{PORT} b", &v), "a 8080 b");
        assert_eq!(r("a $TELETRAAN_PORT b", &v), "a 8080 b");
        assert_eq!(r("$TEST=\"$TELETRAAN_Wh-O\"", &v), "$TEST=\"test2\"", "Teletraan's own test");
        assert_eq!(r("port=$TELETRAAN_PORT.", &v), "port=8080.");
    }

    #[test]
    fn defaults_apply_only_to_unknown_keys() {
        let v = vars(&[("PORT", "8080")]);
        assert_eq!(r("${TELETRAAN_PORT:9}", &v), "8080");
        assert_eq!(r("${TELETRAAN_HOST:localhost}:{$TELETRAAN_PORT:1}", &v), "localhost:8080");
        assert_eq!(r("{$TELETRAAN_HOST:a b:c}", &v), "a b:c");
        assert_eq!(r("x${TELETRAAN_X:}y", &v), "xy", "an empty default gives an empty string");
        assert_eq!(
            r("{$TELETRAAN_A:1} and {$TELETRAAN_B:2}", &v),
            "1 and 2",
            "two defaults on a line (Teletraan's greedy regex merged them)"
        );
    }

    #[test]
    fn unknown_keys_without_default_stay_as_written() {
        let v = vars(&[("who", "test1")]);
        assert_eq!(r("$TELETRAAN_who is $TELETRAAN_mike.", &v), "test1 is $TELETRAAN_mike.", "Teletraan's own test");
        for text in ["${TELETRAAN_NOPE}", "{$TELETRAAN_NOPE}", "$TELETRAAN_{NOPE}", "$TELETRAAN_NOPE"] {
            assert_eq!(r(text, &v), text);
        }
        for text in ["${TELETRAAN_}", "${TELETRAAN_A:no close\n}", "$TELETRAAN_1x", "$TELETRAAN_", "${TELETRAAN_who"] {
            assert_eq!(r(text, &v), text, "not a placeholder: {text:?}");
        }
    }

    #[test]
    fn values_are_not_expanded_again_and_other_bytes_pass_through() {
        let v = vars(&[("A", "${TELETRAAN_B}"), ("B", "no")]);
        assert_eq!(r("${TELETRAAN_A}", &v), "${TELETRAAN_B}");
        assert_eq!(r("é ${X} $HOME {$Y} ✓", &v), "é ${X} $HOME {$Y} ✓");
        assert_eq!(render(b"\xff$TELETRAAN_B\xfe", &v), b"\xffno\xfe");
    }

    #[test]
    fn a_long_line_of_unclosed_defaults_renders_in_linear_time() {
        // Each `${TELETRAAN_A:` looked for its `}` to the end of the line: 900 KB took two
        // minutes (debug build): 64,000 openings read 450 KB each on average. Found by fuzzing
        // (agent/tests/fuzz.rs).
        let v = vars(&[("A", "x")]);
        // Counted, not timed: 4,000 openings suffice to tell linear from quadratic work.
        let text = "${TELETRAAN_A:".repeat(4_000).into_bytes();
        let (out, read) = render_counted(&text, &v);
        assert_eq!(out, text, "nothing closes, so nothing is replaced");
        assert!(read <= WORK_PER_BYTE * text.len(), "{read} bytes read for {}", text.len());
        // A stop remembered for one line is not used for the next.
        let text = "${TELETRAAN_A:1 ${TELETRAAN_B:2\n${TELETRAAN_C:3 {$TELETRAAN_D:4}\n${TELETRAAN_A}";
        assert_eq!(r(text, &v), "${TELETRAAN_A:1 ${TELETRAAN_B:2\n3 {$TELETRAAN_D:4\nx");
    }

    #[test]
    fn script_config_is_read_as_teletraan_reads_it() {
        let t = TempDir::new("tmpl-cfg");
        let path = t.path().join("web_SCRIPT_CONFIG");
        assert!(read_script_config(&path).unwrap().is_empty());
        fs::write(&path, "who = \"test1\"\nWh-O =   'test2'\nTEST = test3\nURL=http://x/?a=b\nnoequals\n").unwrap();
        let v = read_script_config(&path).unwrap();
        assert_eq!(v, vars(&[("who", "test1"), ("Wh-O", "test2"), ("TEST", "test3"), ("URL", "http://x/?a=b")]));
    }

    fn build(t: &TempDir) -> PathBuf {
        let b = t.path().join("build");
        fs::create_dir_all(b.join("teletraan/conf")).unwrap();
        fs::write(b.join("teletraan/RESTARTING.tmpl"), "#!/bin/sh\necho ${TELETRAAN_PORT}\n").unwrap();
        fs::set_permissions(b.join("teletraan/RESTARTING.tmpl"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(b.join("teletraan/conf/app.conf.tmpl"), "port={$TELETRAAN_PORT:1}\n").unwrap();
        fs::write(b.join("teletraan/PRE_RESTART"), "#!/bin/sh\n").unwrap();
        b
    }

    #[test]
    fn templates_render_into_the_script_dir_from_a_copy_made_once() {
        let t = TempDir::new("tmpl-build");
        let b = build(&t);
        assert_eq!(render_build(&b, &BTreeMap::new()).unwrap(), 0, "no variables: nothing (Teletraan)");
        assert!(!b.join(TEMPLATE_DIR).exists());
        assert_eq!(render_build(&b, &vars(&[("PORT", "8080")])).unwrap(), 2);
        assert_eq!(fs::read_to_string(b.join("teletraan/RESTARTING")).unwrap(), "#!/bin/sh\necho 8080\n");
        assert_eq!(fs::read_to_string(b.join("teletraan/conf/app.conf")).unwrap(), "port=8080\n");
        let mode = fs::metadata(b.join("teletraan/RESTARTING")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "the template's mode is kept");
        assert!(b.join("teletraan_template/RESTARTING.tmpl").is_file());
        // Later renders start from the pristine copy, even when teletraan/ was changed.
        fs::write(b.join("teletraan/conf/app.conf.tmpl"), "changed ${TELETRAAN_PORT}\n").unwrap();
        assert_eq!(render_build(&b, &vars(&[("PORT", "9090")])).unwrap(), 2);
        assert_eq!(fs::read_to_string(b.join("teletraan/conf/app.conf")).unwrap(), "port=9090\n");
        let leftovers: Vec<String> = listing(&b)
            .into_iter()
            .filter(|l| l.contains("render-tmp") || l.contains(".teletraan_template.tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_template_or_output_that_escapes_the_build_is_refused() {
        let t = TempDir::new("tmpl-escape");
        let b = build(&t);
        let outside = t.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret.tmpl"), "secret").unwrap();
        std::os::unix::fs::symlink(outside.join("secret.tmpl"), b.join("teletraan/leak.tmpl")).unwrap();
        let before = listing(&outside);
        let err = render_build(&b, &vars(&[("PORT", "1")])).unwrap_err();
        assert!(matches!(err, Error::Template { .. }) && err.to_string().contains("leak.tmpl"), "{err}");
        assert!(err.is_permanent());

        // An output directory that is a link out of the build.
        let t2 = TempDir::new("tmpl-escape2");
        let b2 = build(&t2);
        render_build(&b2, &vars(&[("PORT", "1")])).unwrap();
        fs::remove_dir_all(b2.join("teletraan/conf")).unwrap();
        std::os::unix::fs::symlink(&outside, b2.join("teletraan/conf")).unwrap();
        let err = render_build(&b2, &vars(&[("PORT", "1")])).unwrap_err();
        assert!(err.to_string().contains("outside the build dir"), "{err}");
        assert_eq!(listing(&outside), before, "nothing was written outside");
    }

    #[test]
    fn an_output_that_is_a_symlink_is_replaced_not_written_through() {
        let t = TempDir::new("tmpl-link");
        let b = build(&t);
        let victim = t.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, b.join("teletraan/RESTARTING")).unwrap();
        render_build(&b, &vars(&[("PORT", "1")])).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert!(!fs::symlink_metadata(b.join("teletraan/RESTARTING")).unwrap().file_type().is_symlink());
    }
}
