//! The budget and the runner every fuzz target shares (included with `#[path]` by the fuzz
//! tests of the api, agent and ops crates, which have no test crate in common).
//!
//! A target runs `TELETRAAN_FUZZ_CASES` cases when that is set (`ops/fuzz/run.sh` sets it
//! high for a long run) and its own short default otherwise (CI). The generator's seed comes
//! from `TELETRAAN_FUZZ_SEED`, or from the clock; it is printed with the outcome, so a failure
//! can be replayed. Each target prints one line, `fuzz <target>: <n> cases in <s> s (seed
//! <seed>)`, which run.sh collects.

#![allow(dead_code)]

use std::cell::Cell;
use std::fmt::{self, Debug};
use std::sync::Once;
use std::time::Instant;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};

/// Cases of every target, when set.
pub const CASES_VAR: &str = "TELETRAAN_FUZZ_CASES";
/// The generator's seed, when set.
pub const SEED_VAR: &str = "TELETRAAN_FUZZ_SEED";

/// How many cases a target runs: [`CASES_VAR`], or `short`.
pub fn cases(short: u32) -> u32 {
    match std::env::var(CASES_VAR) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{CASES_VAR}={v:?} is not a number of cases")),
        Err(_) => short,
    }
}

fn seed() -> u64 {
    match std::env::var(SEED_VAR) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{SEED_VAR}={v:?} is not a number")),
        Err(_) => {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
        }
    }
}

/// Runs `check` on [`cases`]`(short)` values of `strategy`; a failure (an `Err` or a panic)
/// is shrunk to a small input and fails the test with it. Returns the number of cases run
/// (those the check rejected as not applicable excepted; shrinking steps included).
pub fn run<S>(target: &str, short: u32, strategy: S, check: impl Fn(S::Value) -> Result<(), TestCaseError>) -> u64
where
    S: Strategy,
    S::Value: Debug,
{
    let seed = seed();
    let config = Config {
        cases: cases(short),
        // Failures are reported with their seed; nothing is written next to the sources.
        failure_persistence: None,
        // A case may be a request to a server: shrinking is bounded in time, not only in steps.
        max_shrink_iters: 2_000,
        max_shrink_time: 60_000,
        max_global_rejects: u32::MAX,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let ran = Cell::new(0u64);
    let started = Instant::now();
    quiet_panics();
    QUIET.set(true);
    let outcome = runner.run(&strategy, |value| {
        let result = check(value);
        if !matches!(result, Err(TestCaseError::Reject(_))) {
            ran.set(ran.get() + 1);
        }
        result
    });
    QUIET.set(false);
    let line = format!("fuzz {target}: {} cases in {:.1} s (seed {seed})", ran.get(), started.elapsed().as_secs_f64());
    eprintln!("{line}");
    match outcome {
        Ok(()) => ran.get(),
        Err(TestError::Fail(reason, value)) => {
            panic!("{line}: failed: {reason}\nminimal input: {}", shown(&value))
        }
        Err(TestError::Abort(reason)) => panic!("{line}: aborted: {reason}"),
    }
}

thread_local! {
    /// Set while this thread runs cases: a panic is a failing case, reported once shrunk.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Keeps the panics of cases (one per shrinking step) out of the output; other threads' panics
/// are printed as before.
fn quiet_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.get() {
                previous(info);
            }
        }));
    });
}

/// Bytes that show as a byte string (`b"PK\x03\x04…"`) in a failure, not as a list of numbers.
#[derive(Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// `value`'s debug form, cut to a readable length.
pub fn shown(value: &impl Debug) -> String {
    let text = format!("{value:?}");
    if text.len() <= 4_000 {
        return text;
    }
    let cut = (0..=4_000).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    format!("{}… ({} bytes in all)", &text[..cut], text.len())
}

/// Fails the case with `message` unless `condition` holds.
pub fn ensure(condition: bool, message: impl FnOnce() -> String) -> Result<(), TestCaseError> {
    if condition { Ok(()) } else { Err(TestCaseError::fail(message())) }
}

/// A TOML basic string holding `s`, escaped by hand (control characters as `\u`), so that a
/// configuration target can write any text into a file it then parses.
pub fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
