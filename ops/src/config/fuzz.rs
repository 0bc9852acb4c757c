//! Fuzzing of the server's configuration (docs/fuzzing.md): the TOML file as arbitrary bytes
//! and as documents of known keys with values of their type or of any type, together with
//! flags and environment variables of any value. Every case must resolve to settings that
//! keep the rules `resolve` states, or to an error that names what is wrong; never a panic.
//! `TELETRAAN_FUZZ_CASES` sets the number of cases (`ops/fuzz/run.sh`).

#[path = "../../fuzz/budget.rs"]
mod budget;

use std::time::Duration;

use budget::{Bytes, ensure, toml_string};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use proptest::test_runner::TestCaseError;

use super::ServerArgs;

/// What a key of the file holds.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Url,
    Name,
    Address,
    Token,
    Seconds,
    Count,
    Signed,
    List,
    Bool,
    Jobs,
    Duration,
    Path,
}

const KEYS: [(&str, Kind); 39] = [
    ("database_url", Kind::Url),
    ("amqp_url", Kind::Url),
    ("namespace", Kind::Name),
    ("api_listen", Kind::Address),
    ("gateway_listen", Kind::Address),
    ("worker_listen", Kind::Address),
    ("admin_token", Kind::Token),
    ("agent_token", Kind::Token),
    ("command_wait", Kind::Seconds),
    ("artifact_allowed", Kind::List),
    ("artifact_url_prefixes", Kind::List),
    ("artifact_allow_file", Kind::Bool),
    ("artifact_checksum", Kind::Name),
    ("database_pool", Kind::Count),
    ("database_connect_timeout", Kind::Seconds),
    ("database_pool_timeout", Kind::Seconds),
    ("statement_timeout", Kind::Seconds),
    ("amqp_timeout", Kind::Seconds),
    ("request_timeout", Kind::Seconds),
    ("client_read_timeout", Kind::Seconds),
    ("jobs", Kind::Jobs),
    ("job_lease", Kind::Duration),
    ("min_stale_host_seconds", Kind::Seconds),
    ("max_stale_host_seconds", Kind::Seconds),
    ("max_builds_per_name", Kind::Signed),
    ("max_build_days", Kind::Signed),
    ("command_retention_days", Kind::Signed),
    ("history_retention_days", Kind::Signed),
    ("step_retention_days", Kind::Signed),
    ("heartbeat_seconds", Kind::Seconds),
    ("retention_batch", Kind::Signed),
    ("webhook_timeout", Kind::Seconds),
    ("webhook_attempts", Kind::Count),
    ("trusted_user_header", Kind::Name),
    ("trusted_groups_header", Kind::Name),
    ("trusted_proxies", Kind::List),
    ("tls_cert", Kind::Path),
    ("tls_key", Kind::Path),
    ("amqp_ca_file", Kind::Path),
];

/// Text: values right for some setting, wrong for others, and noise.
fn text() -> impl Strategy<Value = String> {
    let plausible = select(vec![
        "postgres://localhost:5432/teletraan",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        "amqps://h:5671/%2f",
        "amqp://a:5672/%2f, amqps://b:5671/%2f",
        "teletraan",
        "bad namespace",
        "127.0.0.1:8080",
        "[::1]:0",
        "localhost:80",
        "0123456789abcdef",
        "short",
        "has space inside",
        "sidecar",
        "required",
        "x-user",
        "bad header\n",
        "10.0.0.0/8",
        "::1/129",
        "https://artifacts.example.com/web/",
        "file:///srv/a",
        "ftp://x/",
        "deploy_state=30s",
        "host_janitor=off,nope=1s",
        "30s",
        "0ms",
        "18446744073709551615d",
        "",
        " ",
    ]);
    prop_oneof![6 => plausible.prop_map(String::from), 3 => "\\PC{0,16}", 1 => (0usize..50_000).prop_map(|n| "t".repeat(n))]
}

/// A TOML value of any type.
fn any_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        text().prop_map(|t| toml_string(&t)),
        any::<i64>().prop_map(|n| n.to_string()),
        select(vec!["1.5", "nan", "-inf", "true", "1979-05-27", "18446744073709551616", "0b101"])
            .prop_map(String::from),
        (1usize..150).prop_map(|n| format!("{}0{}", "[".repeat(n), "]".repeat(n))),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            vec(("[a-z_]{1,8}", inner), 0..3).prop_map(|kv| {
                let pairs: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{{}}}", pairs.join(", "))
            }),
        ]
    })
}

/// Unsigned numbers: small ones, the bounds the checks use, and the extremes.
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..200,
        2 => select(vec![0u64, 1, 50, 51, 300, 301, 3600, 3601, u64::from(u32::MAX) + 1, i64::MAX as u64, u64::MAX / 2 + 1, u64::MAX]),
        1 => any::<u64>(),
    ]
}

fn typed(kind: Kind) -> BoxedStrategy<String> {
    match kind {
        Kind::Url | Kind::Name | Kind::Address | Kind::Token | Kind::Duration => {
            text().prop_map(|t| toml_string(&t)).boxed()
        }
        // TOML integers are signed: numbers past i64::MAX are refused by the parser.
        Kind::Seconds | Kind::Count => number().prop_map(|n| n.to_string()).boxed(),
        Kind::Signed => prop_oneof![any::<i64>(), -2i64..200].prop_map(|n| n.to_string()).boxed(),
        Kind::List => vec(text(), 0..3)
            .prop_map(|l| format!("[{}]", l.iter().map(|t| toml_string(t)).collect::<Vec<_>>().join(", ")))
            .boxed(),
        Kind::Bool => select(vec!["true", "false"]).prop_map(String::from).boxed(),
        Kind::Jobs => btree_map(
            prop_oneof![
                select(vec!["deploy_state", "host_janitor", "auto_promote", "nope"]).prop_map(String::from),
                "[a-z_]{1,8}"
            ],
            text(),
            0..3,
        )
        .prop_map(|m| {
            let pairs: Vec<String> = m.iter().map(|(k, v)| format!("{k} = {}", toml_string(v))).collect();
            format!("{{{}}}", pairs.join(", "))
        })
        .boxed(),
        // Paths that exist or not, never a device or a fifo (the CA file is read).
        Kind::Path => {
            select(vec!["/nonexistent/ca.pem", "", ".", "/etc/hostname", "relative.pem"]).prop_map(toml_string).boxed()
        }
    }
}

/// A configuration file: distinct known keys with values of their type (mostly) or of any
/// type, an extra line now and then (a key twice, an unknown key, a table, junk), then,
/// sometimes, bytes flipped or cut; or arbitrary bytes.
fn file_text() -> impl Strategy<Value = Vec<u8>> {
    let line = |(key, kind): (&'static str, Kind)| {
        prop_oneof![30 => typed(kind), 1 => any_value()].prop_map(move |v| format!("{key} = {v}"))
    };
    let known =
        subsequence(KEYS.to_vec(), 0..14).prop_flat_map(move |keys| keys.into_iter().map(line).collect::<Vec<_>>());
    let extra = prop_oneof![
        3 => select(KEYS.to_vec()).prop_flat_map(line),
        1 => ("[a-z_]{1,12}", any_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => "\\[[a-z.]{1,8}\\]",
        1 => "\\PC{0,20}",
    ];
    let document = (known, proptest::option::weighted(0.3, extra))
        .prop_map(|(mut lines, extra)| {
            lines.extend(extra);
            lines
        })
        .prop_shuffle()
        .prop_map(|lines| lines.join("\n").into_bytes());
    let flipped = (document.clone(), vec((0.0..1.0f64, any::<u8>()), 1..4)).prop_map(|(mut d, flips)| {
        for (at, x) in flips {
            let i = (d.len() as f64 * at) as usize;
            if let Some(b) = d.get_mut(i) {
                *b ^= x;
            }
        }
        d
    });
    prop_oneof![10 => document, 2 => flipped, 1 => vec(any::<u8>(), 0..512)]
}

/// Flags and environment variables (clap has already parsed the numbers).
fn args() -> impl Strategy<Value = ServerArgs> {
    let some = |p: f64| proptest::option::weighted(p, text());
    let num = |p: f64| proptest::option::weighted(p, number());
    (
        (some(0.1), some(0.1), some(0.1), some(0.1), some(0.1), some(0.1)),
        (num(0.1), num(0.1), num(0.1), num(0.1), num(0.1), num(0.1)),
        (some(0.05), some(0.05), some(0.05), some(0.05), proptest::option::weighted(0.05, any::<u32>())),
    )
        .prop_map(
            |((namespace, api_listen, jobs, job_lease, artifact_allowed, trusted_proxies), seconds, rest)| {
                let (command_wait, amqp_timeout, request_timeout, heartbeat_seconds, min_stale, max_stale) = seconds;
                let (admin_token, artifact_checksum, trusted_user_header, artifact_allow_file, webhook_attempts) = rest;
                ServerArgs {
                    namespace,
                    api_listen,
                    jobs,
                    job_lease,
                    artifact_allowed,
                    trusted_proxies,
                    command_wait,
                    amqp_timeout,
                    request_timeout,
                    heartbeat_seconds,
                    min_stale_host_seconds: min_stale,
                    max_stale_host_seconds: max_stale,
                    admin_token,
                    artifact_checksum,
                    trusted_user_header,
                    artifact_allow_file,
                    webhook_attempts,
                    ..ServerArgs::default()
                }
            },
        )
}

#[test]
fn fuzz_server_config() {
    let dir = std::env::temp_dir().join(format!("teletraan-fuzz-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let path = dir.join("teletraan.toml");
    let case = (proptest::option::weighted(0.9, file_text().prop_map(Bytes)), args());
    budget::run("server_config", 500, case, |(file, mut args)| {
        if let Some(Bytes(text)) = &file {
            std::fs::write(&path, text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            args.config = Some(path.clone());
        }
        match args.resolve() {
            Ok(s) => {
                let shown = format!("{s:?}");
                ensure(!s.namespace.is_empty() && s.database_pool >= 1, || shown.clone())?;
                ensure(s.request_timeout > s.command_wait, || shown.clone())?;
                ensure((1..=20).contains(&s.webhook_attempts), || shown.clone())?;
                ensure(s.heartbeat_resolution >= Duration::from_secs(1), || shown.clone())?;
                ensure(s.jobs.janitor.max_stale > s.jobs.janitor.min_stale, || shown)
            }
            Err(e) => ensure(!format!("{e:#}").trim().is_empty(), || "an empty error".into()),
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// `KEYS` holds every key the file takes, so a key added to the file is fuzzed too: serde
/// refuses an unknown key naming all the keys it expects.
#[test]
fn the_fuzzed_keys_are_every_key_of_the_file() {
    let refusal = toml::from_str::<super::FileConfig>("no_such_key = 1").expect_err("an unknown key").to_string();
    let (_, expected) = refusal.split_once("expected one of").unwrap_or_else(|| panic!("no key list in: {refusal}"));
    let mut file_keys: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let mut fuzzed: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
    file_keys.sort_unstable();
    fuzzed.sort_unstable();
    assert_eq!(fuzzed, file_keys, "KEYS must list every key of the configuration file");
}
