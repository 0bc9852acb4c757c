//! Fuzzing of what the agent reads from outside itself (docs/fuzzing.md): templates and their
//! variables, the script config file, its own TOML configuration, and build archives (tar,
//! tar.gz, zip), each from arbitrary bytes and from valid input with hostile mutations.
//!
//! The oracles: no panic; templates render to at most the text plus one value per
//! placeholder, in linear time; a configuration is loaded or refused with a configuration
//! error; an archive extracts within its limits to files, directories and links that all
//! stay inside the build dir, or is refused leaving nothing behind; nothing outside the build
//! dir ever changes. `TELETRAAN_FUZZ_CASES` sets the number of cases (`ops/fuzz/run.sh`).

#[path = "../../ops/fuzz/budget.rs"]
mod budget;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use agent::Error;
use agent::config::{Config, Options};
use agent::extract::{Limits, extract_build};
use agent::layout::Layout;
use agent::template::{WORK_PER_BYTE, read_script_config, render_build, render_counted};
use agent::testutil::{TempDir, listing};
use budget::{Bytes, ensure, toml_string};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;

// ---------------------------------------------------------------------------------------------
// Templates

const KEYS: [&str; 5] = ["A", "PORT", "Wh-O", "x_1", "LONG_KEY_NAME_0"];
const MARKER: &[u8] = b"TELETRAAN_";

/// A piece of template text: the placeholder syntax in parts, keys, and noise.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    let syntax =
        ["${TELETRAAN_", "{$TELETRAAN_", "$TELETRAAN_{", "$TELETRAAN_", "TELETRAAN_", ":", "}", "{", "$", "\n"];
    prop_oneof![
        4 => select(syntax.to_vec()).prop_map(|s| s.as_bytes().to_vec()),
        3 => select(KEYS.to_vec()).prop_map(|s| s.as_bytes().to_vec()),
        1 => vec(any::<u8>(), 0..6),
        1 => "\\PC{0,6}".prop_map(String::into_bytes),
    ]
}

/// A placeholder, whole or cut short: an opening, a key, then what may close it.
fn placeholder() -> impl Strategy<Value = Vec<u8>> {
    let open = select(vec!["${TELETRAAN_", "{$TELETRAAN_", "$TELETRAAN_{", "$TELETRAAN_"]);
    let close = select(vec!["", "}", ":", ":d", ":d}", ":}", " ", "\n"]);
    (open, select(KEYS.to_vec()), close).prop_map(|(o, k, c)| format!("{o}{k}{c}").into_bytes())
}

fn value(max_len: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "\\PC{0,12}",
        1 => select(vec!["${TELETRAAN_A}", "$TELETRAAN_PORT", "{$TELETRAAN_x_1:d}", "}", ""]).prop_map(String::from),
        1 => (0..=max_len).prop_map(|n| "v".repeat(n)),
    ]
}

fn vars(max_len: usize) -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map(prop_oneof![3 => select(KEYS.to_vec()).prop_map(String::from), 1 => "\\PC{0,8}"], value(max_len), 0..6)
}

/// A template and its variables: arbitrary bytes, placeholders and noise, or a long stretch of
/// one construct repeated (long lines of placeholders or unclosed defaults), whose values are
/// kept short so that what the test itself holds stays small.
fn template_case() -> impl Strategy<Value = (Bytes, BTreeMap<String, String>)> {
    let case = prop_oneof![
        2 => (vec(any::<u8>(), 0..2048), vars(65_536)),
        6 => (vec(fragment(), 0..48).prop_map(|p| p.concat()), vars(65_536)),
        1 => ((vec(fragment(), 1..4), 100usize..10_000).prop_map(|(p, n)| p.concat().repeat(n)), vars(64)),
        1 => ((vec(placeholder(), 1..3), 100usize..10_000).prop_map(|(p, n)| p.concat().repeat(n)), vars(64)),
    ];
    case.prop_map(|(text, vars)| (Bytes(text), vars))
}

fn occurrences(text: &[u8], what: &[u8]) -> usize {
    text.windows(what.len()).filter(|w| *w == what).count()
}

#[test]
fn fuzz_template_render() {
    budget::run("template_render", 800, template_case(), |(Bytes(text), vars)| {
        let (out, read) = render_counted(&text, &vars);
        // Each replaced placeholder uses one `TELETRAAN_` of the text and adds at most one
        // value (a default is part of the text it replaces): nothing is expanded twice.
        let longest = vars.values().map(String::len).max().unwrap_or(0);
        let bound = text.len() + occurrences(&text, MARKER) * longest;
        ensure(out.len() <= bound, || format!("{} bytes out of {} in, more than {bound}", out.len(), text.len()))?;
        if vars.is_empty() {
            ensure(out.len() <= text.len(), || "without variables, only defaults replace text".into())?;
        }
        if occurrences(&text, MARKER) == 0 {
            ensure(out == text, || "text without a placeholder must pass through unchanged".into())?;
        }
        // Linear: the long cases of repeated constructs are where quadratic work would show.
        ensure(read <= WORK_PER_BYTE * text.len(), || format!("{read} bytes read for a text of {}", text.len()))
    });
}

#[test]
fn fuzz_script_config() {
    let dir = TempDir::new("fuzz-script-config");
    let path = dir.path().join("web_SCRIPT_CONFIG");
    let text = prop_oneof![
        vec(any::<u8>(), 0..1024),
        vec(prop_oneof![Just(b"=".to_vec()), Just(b"\n".to_vec()), Just(b"\"".to_vec()), fragment()], 0..40)
            .prop_map(|p| p.concat()),
    ];
    budget::run("script_config", 600, text.prop_map(Bytes), |Bytes(text)| {
        fs::write(&path, &text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        match read_script_config(&path) {
            Ok(vars) => {
                for (k, v) in &vars {
                    ensure(!k.contains('\n') && !v.contains('\n'), || format!("a line break survived: {k:?}={v:?}"))?;
                }
                ensure(std::str::from_utf8(&text).is_ok(), || "invalid UTF-8 was read as variables".into())
            }
            // Text that is not UTF-8 is an error naming the file, as any unreadable file.
            Err(e) => ensure(e.to_string().contains("web_SCRIPT_CONFIG"), || format!("{e}")),
        }
    });
}

/// A build's files, as the archive left them: the hook dir, templates, links anywhere.
#[derive(Debug, Clone)]
enum BuildEntry {
    File(String, Vec<u8>, u32),
    Dir(String),
    Link(String, String),
}

fn build_entries() -> impl Strategy<Value = Vec<BuildEntry>> {
    let dirs = ["teletraan", "teletraan/conf", "teletraan_template", "teletraan_template/conf", "other"];
    let name = (select(dirs.to_vec()), select(vec!["a.tmpl", "RESTARTING.tmpl", ".tmpl", "conf", "x", "b.tmpl"]))
        .prop_map(|(d, f)| format!("{d}/{f}"));
    let path = prop_oneof![name.clone(), select(dirs.to_vec()).prop_map(String::from)];
    let target = select(vec![
        "../../outside",
        "../../outside/secret.tmpl",
        // (Never a real system path: the harness runs as root.)
        "../../outside/passwd",
        "..",
        "../teletraan",
        "a.tmpl",
        "conf",
        "../teletraan_template/conf",
        "../../../outside",
    ]);
    let entry = prop_oneof![
        4 => (name, vec(fragment(), 0..12).prop_map(|p| p.concat()), select(vec![0o644u32, 0o755, 0o4755, 0o000]))
            .prop_map(|(n, body, mode)| BuildEntry::File(n, body, mode)),
        1 => path.clone().prop_map(BuildEntry::Dir),
        2 => (path, target).prop_map(|(n, t)| BuildEntry::Link(n, t.to_string())),
    ];
    vec(entry, 1..12)
}

/// Whether writing at `p` would go through a link the build already holds (the harness must
/// never follow one: it runs as root, and a link may point anywhere).
fn through_link(build: &Path, p: &Path) -> bool {
    let mut at = build.to_path_buf();
    for part in p.strip_prefix(build).unwrap_or(p).components() {
        at.push(part);
        if fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            return true;
        }
    }
    false
}

fn write_build(build: &Path, entries: &[BuildEntry]) {
    for e in entries {
        let target = match e {
            BuildEntry::File(n, ..) | BuildEntry::Dir(n) | BuildEntry::Link(n, _) => build.join(n),
        };
        if through_link(build, &target) {
            continue;
        }
        // Entries that do not fit (a file where a dir is, a name taken) are skipped: the
        // tree is whatever an archive could have left.
        let _ = match e {
            BuildEntry::File(n, body, mode) => {
                let p = build.join(n);
                let _ = fs::create_dir_all(p.parent().unwrap_or(build));
                fs::write(&p, body).and_then(|()| fs::set_permissions(&p, fs::Permissions::from_mode(*mode)))
            }
            BuildEntry::Dir(n) => fs::create_dir_all(build.join(n)),
            BuildEntry::Link(n, t) => {
                let p = build.join(n);
                let _ = fs::create_dir_all(p.parent().unwrap_or(build));
                std::os::unix::fs::symlink(t, &p)
            }
        };
    }
}

#[test]
fn fuzz_template_build() {
    let case = (build_entries(), vars(64));
    budget::run("template_build", 150, case, |(entries, vars)| {
        let root = TempDir::new("fuzz-template-build");
        let outside = root.path().join("outside");
        fs::create_dir(&outside).map_err(|e| TestCaseError::fail(e.to_string()))?;
        fs::write(outside.join("secret.tmpl"), "secret ${TELETRAAN_A}")
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let build = root.path().join("build");
        fs::create_dir(&build).map_err(|e| TestCaseError::fail(e.to_string()))?;
        write_build(&build, &entries);
        // What the build's links reach may have been written by `write_build` itself; from
        // here on, nothing but the build may change.
        let beside =
            || -> Vec<String> { listing(root.path()).into_iter().filter(|l| !l.starts_with("build/")).collect() };
        let (before, secret) = (beside(), fs::read(outside.join("secret.tmpl")).ok());
        let outcome = render_build(&build, &vars);
        ensure(beside() == before, || {
            format!("outside the build: {before:#?}\nbecame {:#?}\n({outcome:?})", beside())
        })?;
        ensure(fs::read(outside.join("secret.tmpl")).ok() == secret, || format!("secret.tmpl changed ({outcome:?})"))
    });
}

// ---------------------------------------------------------------------------------------------
// The agent's configuration file

/// What a key of the file holds: how its well-typed values are made.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    Path,
    List,
    Tags,
    Seconds,
    Count,
    Bool,
}

const CONFIG_KEYS: [(&str, Kind); 25] = [
    ("server", Kind::Text),
    ("ca_file", Kind::Path),
    ("token", Kind::Text),
    ("enroll_token", Kind::Text),
    ("credential_file", Kind::Path),
    ("hook_user", Kind::Text),
    ("host_id", Kind::Text),
    ("host_name", Kind::Text),
    ("host_ip", Kind::Text),
    ("groups", Kind::List),
    ("tags", Kind::Tags),
    ("dir", Kind::Path),
    ("ping_interval", Kind::Seconds),
    ("long_poll", Kind::Seconds),
    ("script_timeout", Kind::Seconds),
    ("max_retries", Kind::Count),
    ("builds_to_keep", Kind::Count),
    ("min_running_time", Kind::Seconds),
    ("termination_timeout", Kind::Seconds),
    ("retry_delay", Kind::Seconds),
    ("archive_max_bytes", Kind::Count),
    ("archive_max_entries", Kind::Count),
    ("artifact_allowed", Kind::List),
    ("allow_unverified_artifacts", Kind::Bool),
    ("metrics_listen", Kind::Text),
];

/// Texts right for some key of the agent's configuration and wrong for others.
const PLAUSIBLE_TEXTS: &[&str] = &[
    "http://127.0.0.1:8081",
    "https://gw.example.com/",
    "ftp://x",
    "http://",
    "web",
    "web,api",
    "az=1a,team=x",
    "novalue",
    "127.0.0.1:9102",
    "[::1]:0",
    "root",
    "no-such-user-x",
    "a b",
    "web-1",
    "i-0abc",
    "",
    " ",
    "file:///srv/a",
    "https://a.example.com/web",
    "/var/lib/teletraan-agent",
    "relative/dir",
    "/nonexistent/ca.pem",
];

/// Text values: some right for some key, some wrong for every key.
fn text_value() -> impl Strategy<Value = String> {
    let plausible = select(PLAUSIBLE_TEXTS);
    prop_oneof![
        6 => plausible.prop_map(String::from),
        3 => "\\PC{0,16}",
        1 => (0usize..100_000).prop_map(|n| "h".repeat(n)),
    ]
}

/// A value of the type the key takes, most of the time with a value that may be refused.
fn typed_value(kind: Kind) -> BoxedStrategy<String> {
    let seconds = prop_oneof![
        4 => (0u64..100).prop_map(|n| n.to_string()),
        1 => select(vec!["0", "60", "61", "3600", "4294967296", "9223372036854775807"]).prop_map(String::from),
        1 => (0..=i64::MAX).prop_map(|n| n.to_string()),
    ];
    match kind {
        Kind::Text => text_value().prop_map(|t| toml_string(&t)).boxed(),
        Kind::Path => prop_oneof![
            select(vec!["/var/lib/teletraan-agent", "relative/dir", "", "/nonexistent/ca.pem", "."])
                .prop_map(String::from),
            "\\PC{0,16}"
        ]
        .prop_map(|t| toml_string(&t))
        .boxed(),
        Kind::List => prop_oneof![
            text_value().prop_map(|t| toml_string(&t)),
            vec(text_value(), 0..4)
                .prop_map(|l| format!("[{}]", l.iter().map(|t| toml_string(t)).collect::<Vec<_>>().join(", "))),
        ]
        .boxed(),
        Kind::Tags => prop_oneof![
            text_value().prop_map(|t| toml_string(&t)),
            vec(("[a-z]{1,4}", text_value()), 0..4).prop_map(|kv| {
                let pairs: Vec<String> = kv.iter().map(|(k, v)| format!("{k} = {}", toml_string(v))).collect();
                format!("{{{}}}", pairs.join(", "))
            }),
        ]
        .boxed(),
        Kind::Seconds | Kind::Count => seconds.boxed(),
        Kind::Bool => select(vec!["true", "false"]).prop_map(String::from).boxed(),
    }
}

/// A TOML value of any type, sometimes of the right one for some key, sometimes hostile.
fn toml_value() -> impl Strategy<Value = String> {
    let plausible = select(PLAUSIBLE_TEXTS);
    let leaf = prop_oneof![
        4 => plausible.prop_map(toml_string),
        3 => "\\PC{0,16}".prop_map(|s| toml_string(&s)),
        1 => (0usize..100_000).prop_map(|n| toml_string(&"h".repeat(n))),
        3 => any::<i64>().prop_map(|n| n.to_string()),
        2 => select(vec!["0", "1", "-1", "60", "61", "4294967296", "18446744073709551615", "9223372036854775808"])
            .prop_map(String::from),
        1 => select(vec!["1.5", "inf", "nan", "-0.0", "1e400", "true", "false", "1979-05-27T07:32:00Z", "0x10", "1_000"])
            .prop_map(String::from),
        1 => (1usize..200).prop_map(|n| format!("{}1{}", "[".repeat(n), "]".repeat(n))),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(", "))),
            vec(("[a-z]{1,4}", inner), 0..4).prop_map(|kv| {
                let pairs: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{{}}}", pairs.join(", "))
            }),
        ]
    })
}

/// A configuration file: known keys, mostly with values of their type (so that most files get
/// past the parser to the checks of each value), sometimes of any type, some twice; unknown
/// keys, tables, comments and junk lines; then, sometimes, bytes flipped or cut.
fn config_text() -> impl Strategy<Value = Vec<u8>> {
    let line = |(key, kind): (&'static str, Kind)| {
        prop_oneof![40 => typed_value(kind), 1 => toml_value()].prop_map(move |v| format!("{key} = {v}"))
    };
    let known = proptest::sample::subsequence(CONFIG_KEYS.to_vec(), 0..12)
        .prop_flat_map(move |keys| keys.into_iter().map(line).collect::<Vec<_>>());
    let extra = prop_oneof![
        3 => select(CONFIG_KEYS.to_vec()).prop_flat_map(line),
        2 => ("[a-z_]{1,12}", toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        2 => "# \\PC{0,20}".prop_map(String::from),
        1 => "\\PC{0,20}",
    ];
    let document = (
        known,
        proptest::option::weighted(0.4, extra).prop_map(|e| e.into_iter().collect::<Vec<_>>()),
        proptest::option::weighted(0.05, "[a-z.]{1,10}"),
    )
        .prop_map(|(mut lines, extra, table)| {
            lines.extend(extra);
            if let Some(t) = table {
                lines.push(format!("[{t}]\nx = 1"));
            }
            lines
        })
        .prop_shuffle()
        .prop_map(|lines| lines.join("\n").into_bytes());
    prop_oneof![
        12 => document.clone(),
        2 => (document, mutations()).prop_map(|(d, m)| mutate(d, &m)),
        1 => vec(any::<u8>(), 0..512),
    ]
}

#[test]
fn fuzz_agent_config() {
    let dir = TempDir::new("fuzz-agent-config");
    let path = dir.path().join("agent.toml");
    let flags = (
        proptest::option::weighted(0.2, prop_oneof![Just("http://127.0.0.1:1".to_string()), "\\PC{0,12}"]),
        proptest::option::weighted(0.2, prop_oneof![Just("web, api,".to_string()), "\\PC{0,12}"]),
        proptest::option::weighted(0.2, prop_oneof![Just("a=1,b=2".to_string()), "\\PC{0,12}"]),
        proptest::option::weighted(0.2, prop_oneof![Just("127.0.0.1:9102".to_string()), "\\PC{0,12}"]),
    );
    budget::run(
        "agent_config",
        400,
        (config_text().prop_map(Bytes), flags),
        |(Bytes(text), (server, groups, tags, listen))| {
            fs::write(&path, &text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let options = Options {
                config: Some(path.clone()),
                // Set, so that no case resolves a made-up host name through DNS.
                host_ip: Some("10.0.0.1".into()),
                server,
                groups,
                tags,
                metrics_listen: listen,
                ..Options::default()
            };
            match Config::load(options) {
                Ok(c) => {
                    let shown = c.to_string();
                    ensure(c.server.starts_with("http://") || c.server.starts_with("https://"), || shown.clone())?;
                    ensure(
                        c.ping_interval >= Duration::from_secs(1) && c.long_poll <= Duration::from_secs(60),
                        || shown.clone(),
                    )?;
                    ensure(c.max_retries >= 1 && c.builds_to_keep >= 1, || shown.clone())?;
                    ensure(c.limits.max_bytes >= 1 && c.limits.max_entries >= 1, || shown.clone())
                }
                Err(Error::Config(message)) => ensure(!message.trim().is_empty(), || "an empty error".into()),
                Err(other) => Err(TestCaseError::fail(format!("not a configuration error: {other:?}"))),
            }
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Byte mutations shared by the archive and configuration targets

/// One change to a byte string, at a position given as a fraction of its length.
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(f64),
    Flip(f64, u8),
    Insert(f64, Vec<u8>),
    Remove(f64, usize),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let at = 0.0..1.0f64;
    let one = prop_oneof![
        1 => at.clone().prop_map(Mutation::Truncate),
        4 => (at.clone(), 1u8..=255).prop_map(|(a, x)| Mutation::Flip(a, x)),
        2 => (at.clone(), vec(any::<u8>(), 1..16)).prop_map(|(a, b)| Mutation::Insert(a, b)),
        2 => (at, 1usize..64).prop_map(|(a, n)| Mutation::Remove(a, n)),
    ];
    vec(one, 1..4)
}

fn mutate(mut data: Vec<u8>, changes: &[Mutation]) -> Vec<u8> {
    let pos = |data: &Vec<u8>, at: f64| ((data.len() as f64) * at) as usize;
    for m in changes {
        match m {
            Mutation::Truncate(at) => data.truncate(pos(&data, *at)),
            Mutation::Flip(at, x) => {
                let i = pos(&data, *at);
                if let Some(b) = data.get_mut(i) {
                    *b ^= x;
                }
            }
            Mutation::Insert(at, bytes) => {
                let i = pos(&data, *at);
                data.splice(i..i, bytes.iter().copied());
            }
            Mutation::Remove(at, n) => {
                let i = pos(&data, *at);
                let end = (i + n).min(data.len());
                data.drain(i..end);
            }
        }
    }
    data
}

// ---------------------------------------------------------------------------------------------
// Archives

/// What an archive entry is, as the tests write it (hostile kinds included).
#[derive(Debug, Clone)]
enum Item {
    Dir(String, u32),
    /// Name, body, mode, and a declared size that differs from the body's when set.
    File(String, Vec<u8>, u32, Option<u64>),
    Symlink(String, String),
    HardLink(String, String),
    /// An entry of another type (device, fifo, sparse, unknown), by its tar type byte.
    Other(String, u8),
    /// A pax header naming the next entry's path.
    PaxPath(String),
}

/// An entry path: parts that traverse (`..`), absolute ones (into the sentinel), empty parts,
/// long ones, and the names the sentinels outside the build use.
fn item_name() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        6 => select(vec!["a", "b", "sub", "..", ".", "", "outside", "neighbour", "keep.txt", "l1", "l2", "{abs}"]).prop_map(String::from),
        2 => "[a-z]{1,3}",
        1 => "[^/\\p{C}]{1,4}",
        1 => (90usize..300).prop_map(|n| "n".repeat(n)),
    ];
    // Absolute names go into the sentinel, without `..`: a bug that let one through must not
    // reach a system path (relative ones climb at most to the temp dir).
    (prop::bool::weighted(0.1), vec(part, 1..5)).prop_map(|(absolute, parts)| {
        // An empty first part would make the name absolute too.
        if absolute || parts.first().is_some_and(String::is_empty) {
            let parts: Vec<String> = parts.into_iter().filter(|p| p != "..").collect();
            format!("{{abs}}/{}", parts.join("/"))
        } else {
            parts.join("/")
        }
    })
}

fn link_target() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(vec![
            "../outside",
            "../../outside/keep.txt",
            "../../../outside",
            "../../../../outside/keep.txt",
            // Absolute targets name a sentinel directory, never a system path: the harness may
            // run as root, and a bug under test would write through them.
            "{abs}",
            "{abs}/keep.txt",
            "a",
            "sub/../..",
            ".",
            "..",
            "l1",
            "l2",
            "l1/..",
            "../neighbour",
            "",
        ])
        .prop_map(String::from),
        1 => item_name(),
    ]
}

fn item() -> impl Strategy<Value = Item> {
    let mode = prop_oneof![Just(0o644u32), Just(0o755), Just(0o4755), Just(0o7777), Just(0), any::<u32>()];
    let body = prop_oneof![
        4 => vec(any::<u8>(), 0..256),
        1 => (0usize..2_000_000).prop_map(|n| vec![0u8; n]),
    ];
    let declared = proptest::option::weighted(
        0.15,
        prop_oneof![Just(0u64), 1u64..4096, Just(1 << 33), Just(u64::MAX >> 1), Just(0o77777777777)],
    );
    prop_oneof![
        2 => (item_name(), mode.clone()).prop_map(|(n, m)| Item::Dir(n, m)),
        5 => (item_name(), body, mode, declared).prop_map(|(n, b, m, d)| Item::File(n, b, m, d)),
        3 => (item_name(), link_target()).prop_map(|(n, t)| Item::Symlink(n, t)),
        1 => (item_name(), link_target()).prop_map(|(n, t)| Item::HardLink(n, t)),
        1 => (item_name(), select(vec![b'3', b'4', b'6', b'7', b'S', b'V', b'M', b'N', b'Z', b'g', 0xff]))
            .prop_map(|(n, t)| Item::Other(n, t)),
        1 => item_name().prop_map(Item::PaxPath),
    ]
}

fn octal(field: &mut [u8], value: u64) {
    // Right-aligned, zero-padded, NUL-terminated; a value too wide is cut on the left, as a
    // hostile writer may do.
    let text = format!("{value:0width$o}", width = field.len() - 1);
    let digits = &text.as_bytes()[text.len() - (field.len() - 1)..];
    field[..digits.len()].copy_from_slice(digits);
    field[field.len() - 1] = 0;
}

/// One 512-byte tar header (old GNU layout), written field by field so that any name, type,
/// mode and size can be given; names and link names longer than their fields are cut (the
/// caller sends a GNU long-name entry first).
fn tar_header(name: &[u8], kind: u8, size: u64, mode: u32, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = kind;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..265].copy_from_slice(b"ustar  \0");
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
    h
}

fn tar_block(out: &mut Vec<u8>, name: &[u8], kind: u8, mode: u32, link: &[u8], body: &[u8], declared: u64) {
    if name.len() > 100 {
        tar_block(out, b"././@LongLink", b'L', 0o644, b"", &[name, b"\0"].concat(), name.len() as u64 + 1);
    }
    if link.len() > 100 {
        tar_block(out, b"././@LongLink", b'K', 0o644, b"", &[link, b"\0"].concat(), link.len() as u64 + 1);
    }
    out.extend_from_slice(&tar_header(name, kind, declared, mode, link));
    out.extend_from_slice(body);
    out.resize(out.len().next_multiple_of(512), 0);
}

/// A pax record `<len> <key>=<value>\n`, whose length counts its own digits.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    format!("{len} {key}={value}\n").into_bytes()
}

fn tar_bytes(items: &[Item]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        match item {
            Item::Dir(n, mode) => tar_block(&mut out, n.as_bytes(), b'5', *mode, b"", b"", 0),
            Item::File(n, body, mode, declared) => {
                let size = declared.unwrap_or(body.len() as u64);
                tar_block(&mut out, n.as_bytes(), b'0', *mode, b"", body, size);
            }
            Item::Symlink(n, t) => tar_block(&mut out, n.as_bytes(), b'2', 0o777, t.as_bytes(), b"", 0),
            Item::HardLink(n, t) => tar_block(&mut out, n.as_bytes(), b'1', 0o644, t.as_bytes(), b"", 0),
            Item::Other(n, kind) => tar_block(&mut out, n.as_bytes(), *kind, 0o644, b"", b"", 0),
            Item::PaxPath(n) => {
                let record = pax_record("path", n);
                tar_block(&mut out, b"PaxHeader", b'x', 0o644, b"", &record, record.len() as u64);
            }
        }
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            let low = crc & 1;
            crc >>= 1;
            if low == 1 {
                crc ^= 0xEDB8_8320;
            }
        }
    }
    !crc
}

const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;

/// A zip of `items`: unix modes in the external attributes (how zip carries links and special
/// files), bodies deflated or stored, declared sizes that may lie.
fn zip_bytes(items: &[Item], deflate: bool, flags: u16) -> Vec<u8> {
    let (mut data, mut central, mut count) = (Vec::new(), Vec::new(), 0u16);
    for item in items {
        let (name, mode, body, declared): (String, u32, Vec<u8>, Option<u64>) = match item {
            Item::Dir(n, m) => (format!("{n}/"), S_IFDIR | (m & 0o7777), Vec::new(), None),
            Item::File(n, b, m, d) => (n.clone(), S_IFREG | (m & 0o7777), b.clone(), *d),
            Item::Symlink(n, t) | Item::HardLink(n, t) => (n.clone(), S_IFLNK | 0o777, t.clone().into_bytes(), None),
            Item::Other(n, kind) => (n.clone(), u32::from(*kind) << 12, Vec::new(), None),
            Item::PaxPath(n) => (n.clone(), 0, Vec::new(), None),
        };
        let method: u16 = if deflate && !body.is_empty() { 8 } else { 0 };
        let stored = if method == 8 {
            let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
            let _ = enc.write_all(&body);
            enc.finish().unwrap_or_default()
        } else {
            body.clone()
        };
        let size = declared.map_or(body.len() as u32, |d| d as u32);
        let (crc, packed, name) = (crc32(&body), stored.len() as u32, name.as_bytes());
        let offset = data.len() as u32;
        let name_len = name.len().min(u16::MAX as usize) as u16;
        let name = &name[..usize::from(name_len)];
        data.extend_from_slice(b"PK\x03\x04");
        for v in [20u16, flags, method, 0, 0x21] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        for v in [crc, packed, size] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        data.extend_from_slice(&name_len.to_le_bytes());
        data.extend_from_slice(&0u16.to_le_bytes());
        data.extend_from_slice(name);
        data.extend_from_slice(&stored);
        central.extend_from_slice(b"PK\x01\x02");
        for v in [0x0314u16, 20, flags, method, 0, 0x21] {
            central.extend_from_slice(&v.to_le_bytes());
        }
        for v in [crc, packed, size] {
            central.extend_from_slice(&v.to_le_bytes());
        }
        for v in [name_len, 0, 0, 0, 0] {
            central.extend_from_slice(&v.to_le_bytes());
        }
        central.extend_from_slice(&(mode << 16).to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name);
        count = count.wrapping_add(1);
    }
    let at = data.len() as u32;
    let size = central.len() as u32;
    data.extend_from_slice(&central);
    data.extend_from_slice(b"PK\x05\x06");
    for v in [0u16, 0, count, count] {
        data.extend_from_slice(&v.to_le_bytes());
    }
    data.extend_from_slice(&size.to_le_bytes());
    data.extend_from_slice(&at.to_le_bytes());
    data.extend_from_slice(&0u16.to_le_bytes());
    data
}

/// The limits every archive case runs under: small, so that declared and real sizes past
/// them are common.
const LIMITS: Limits = Limits { max_bytes: 1 << 20, max_entries: 48 };
const BUILD: &str = "fuzzbuild";

/// Extracts `archive` as the agent does and checks the outcome (see the module doc).
fn check_extraction(archive: &[u8], abs: &Path) -> Result<(), TestCaseError> {
    let fail = |e: std::io::Error| TestCaseError::fail(e.to_string());
    let root = TempDir::new("fuzz-extract");
    let layout = Layout::new(root.path().join("base"));
    layout.create_dirs().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let outside = root.path().join("outside");
    fs::create_dir(&outside).map_err(fail)?;
    fs::write(outside.join("keep.txt"), "precious").map_err(fail)?;
    fs::write(layout.builds_dir().join("neighbour"), "n").map_err(fail)?;
    let path = root.path().join("artifact");
    fs::write(&path, archive).map_err(fail)?;
    let before = listing(root.path());
    let abs_before = listing(abs);

    let outcome = extract_build(&path, &layout, BUILD, LIMITS, &AtomicBool::new(false));

    let build = layout.build_dir(BUILD);
    let build_rel = build.strip_prefix(root.path()).unwrap_or(&build).display().to_string();
    let marker = layout.build_marker(BUILD);
    let marker_rel = marker.strip_prefix(root.path()).unwrap_or(&marker).display().to_string();
    // Everything but the build and its marker is exactly as it was.
    let after: Vec<String> = listing(root.path())
        .into_iter()
        .filter(|l| !(l.starts_with(&format!("{build_rel}/")) || l.starts_with(&marker_rel)))
        .collect();
    ensure(after == before, || format!("outside the build: {before:#?}\nbecame {after:#?}\n({outcome:?})"))?;
    ensure(fs::read(outside.join("keep.txt")).ok().as_deref() == Some(&b"precious"[..]), || "keep.txt changed".into())?;
    ensure(listing(abs) == abs_before, || format!("the absolute sentinel changed: {:?}", listing(abs)))?;
    ensure(fs::read(abs.join("keep.txt")).ok().as_deref() == Some(&b"precious"[..]), || {
        "{abs}/keep.txt changed".into()
    })?;
    match outcome {
        Err(e) => {
            ensure(!build.exists() && !marker.exists(), || format!("a refused archive left {build_rel}: {e}"))?;
            ensure(!e.to_string().is_empty(), || "an empty error".into())
        }
        Ok(()) => {
            ensure(marker.is_file(), || "extracted without its marker".into())?;
            check_tree(&build)
        }
    }
}

/// Files, directories and links only; within the limits; no set-id bits, no hard links; every
/// link resolving inside the build.
fn check_tree(build: &Path) -> Result<(), TestCaseError> {
    let real_root = fs::canonicalize(build).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let (mut bytes, mut entries) = (0u64, 0u64);
    let mut stack = vec![build.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).map_err(|e| TestCaseError::fail(e.to_string()))?.flatten() {
            entries += 1;
            let path = e.path();
            let meta = fs::symlink_metadata(&path).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let kind = meta.file_type();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_symlink() {
                let target = fs::read_link(&path).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let escapes = match fs::canonicalize(&path) {
                    Ok(real) => !real.starts_with(&real_root),
                    // Dangling: where the target would be, read as written.
                    Err(_) => lexically_outside(
                        path.parent().unwrap_or(build).strip_prefix(build).unwrap_or(Path::new("")),
                        &target,
                    ),
                };
                ensure(!escapes, || format!("{} -> {} leaves the build", path.display(), target.display()))?;
            } else if kind.is_file() {
                bytes += meta.len();
                ensure(meta.nlink() == 1, || format!("{} is hard-linked", path.display()))?;
                ensure(meta.mode() & 0o6000 == 0, || format!("{} keeps a set-id bit", path.display()))?;
            } else {
                return Err(TestCaseError::fail(format!("{} is a special file ({kind:?})", path.display())));
            }
        }
    }
    ensure(bytes <= LIMITS.max_bytes, || format!("{bytes} bytes extracted, past the limit"))?;
    ensure(entries <= LIMITS.max_entries, || format!("{entries} entries extracted, past the limit"))
}

/// Whether `target`, read in the directory `dir` (relative to the build), climbs out of it.
fn lexically_outside(dir: &Path, target: &Path) -> bool {
    let mut depth = dir.components().count();
    for c in target.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => return true,
            Component::ParentDir if depth == 0 => return true,
            Component::ParentDir => depth -= 1,
            Component::CurDir => {}
            Component::Normal(_) => depth += 1,
        }
    }
    false
}

#[derive(Debug, Clone, Copy)]
enum Wrapping {
    Tar,
    TarGz,
    ZipStored,
    ZipDeflated,
    ZipFlagged(u16),
}

fn archive_case() -> impl Strategy<Value = (Vec<Item>, Wrapping, Vec<Mutation>)> {
    let wrapping = prop_oneof![
        3 => Just(Wrapping::Tar),
        3 => Just(Wrapping::TarGz),
        2 => Just(Wrapping::ZipStored),
        2 => Just(Wrapping::ZipDeflated),
        // Encrypted (1), data descriptor (8), UTF-8 names (0x800), anything.
        1 => select(vec![1u16, 8, 0x800, 0xffff]).prop_map(Wrapping::ZipFlagged),
    ];
    let changes = prop_oneof![3 => Just(Vec::new()), 1 => mutations()];
    (vec(item(), 0..10), wrapping, changes)
}

/// The absolute sentinel of a target: a directory outside every case's tree that absolute
/// link targets and names (`{abs}`) point into, checked unchanged after each case.
fn abs_sentinel() -> TempDir {
    let dir = TempDir::new("fuzz-abs");
    if let Err(e) = fs::write(dir.path().join("keep.txt"), "precious") {
        panic!("cannot write the sentinel: {e}");
    }
    dir
}

fn archive_bytes(items: &[Item], wrapping: Wrapping, changes: &[Mutation], abs: &Path) -> Vec<u8> {
    let abs = abs.display().to_string();
    let place = |s: &String| s.replace("{abs}", &abs);
    let items: Vec<Item> = items
        .iter()
        .map(|item| match item {
            Item::Dir(n, m) => Item::Dir(place(n), *m),
            Item::File(n, b, m, d) => Item::File(place(n), b.clone(), *m, *d),
            Item::Symlink(n, t) => Item::Symlink(place(n), place(t)),
            Item::HardLink(n, t) => Item::HardLink(place(n), place(t)),
            Item::Other(n, k) => Item::Other(place(n), *k),
            Item::PaxPath(n) => Item::PaxPath(place(n)),
        })
        .collect();
    let items = &items[..];
    let data = match wrapping {
        Wrapping::Tar => tar_bytes(items),
        Wrapping::TarGz => gzip(&tar_bytes(items)),
        Wrapping::ZipStored => zip_bytes(items, false, 0),
        Wrapping::ZipDeflated => zip_bytes(items, true, 0),
        Wrapping::ZipFlagged(flags) => zip_bytes(items, true, flags),
    };
    mutate(data, changes)
}

#[test]
fn fuzz_extract_archives() {
    let abs = abs_sentinel();
    budget::run("extract_archives", 250, archive_case(), |(items, wrapping, changes)| {
        check_extraction(&archive_bytes(&items, wrapping, &changes, abs.path()), abs.path())
    });
}

#[test]
fn fuzz_extract_bytes() {
    let prefix = select(vec![
        &b""[..],
        b"\x1f\x8b",
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff",
        b"PK\x03\x04",
        b"PK\x05\x06",
        b"BZh",
    ]);
    let case = (prefix, vec(any::<u8>(), 0..4096)).prop_map(|(p, rest)| Bytes([p, &rest[..]].concat()));
    let abs = abs_sentinel();
    budget::run("extract_bytes", 300, case, |Bytes(bytes)| check_extraction(&bytes, abs.path()));
}

/// The escapes the oracle must see, so that it is known to be able to fail: a link out of the
/// build and a file written beside it are both reported.
#[test]
fn the_extraction_oracle_sees_an_escape() {
    let t = TempDir::new("fuzz-oracle");
    let build = t.path().join("build");
    fs::create_dir_all(build.join("sub")).unwrap();
    std::os::unix::fs::symlink("../../elsewhere", build.join("sub/l")).unwrap();
    assert!(check_tree(&build).is_err(), "a dangling link out of the build");
    fs::remove_file(build.join("sub/l")).unwrap();
    std::os::unix::fs::symlink(t.path(), build.join("sub/l")).unwrap();
    assert!(check_tree(&build).is_err(), "a link to a directory outside");
    fs::remove_file(build.join("sub/l")).unwrap();
    std::os::unix::fs::symlink("../sub", build.join("sub/l")).unwrap();
    assert!(check_tree(&build).is_ok(), "a link inside");
    assert!(lexically_outside(Path::new("a"), Path::new("../..")));
    assert!(!lexically_outside(Path::new("a"), Path::new("../b/../c")));
}
