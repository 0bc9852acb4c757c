//! How the report path is split between workers.
//!
//! Gateways send a stage's agent records to one of [`REPORT_PARTITIONS`] partition queues,
//! chosen by [`of_stage`], and a host's facts and heartbeats to the one chosen by [`of_host`].
//! Each partition queue has a single active consumer, and workers share the partitions out by
//! [`assigned`]: so one worker at a time stores a stage's records and re-evaluates the stage,
//! and two workers never wait on each other's row locks.
//!
//! Both functions are part of the wire contract: every gateway and worker of a deployment must
//! agree on them, so they never change (a different split would be new queues).

use crate::{EnvId, HostId};

/// Partition queues of the report path. At most this many workers share the reports; more
/// workers still take commands, webhooks and periodic jobs.
pub const REPORT_PARTITIONS: u16 = 16;

/// 32-bit FNV-1a: small, fixed forever, and spreads short ids well enough.
fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn of_key(key: &str) -> u16 {
    (fnv1a(key.as_bytes()) % u32::from(REPORT_PARTITIONS)) as u16
}

/// The partition of a stage's agent records.
pub fn of_stage(env_id: &EnvId) -> u16 {
    of_key(env_id.as_str())
}

/// The partition of a host's facts and heartbeats.
pub fn of_host(host_id: &HostId) -> u16 {
    of_key(host_id.as_str())
}

/// The partitions `me` consumes when `members` are the live workers: sorted by name, the i-th
/// of n takes every partition p with p mod n = i, so each partition has one owner and the
/// counts differ by one at most. Empty when `me` is not a member (it has not joined yet, or
/// the others count it gone).
pub fn assigned(members: &[String], me: &str) -> Vec<u16> {
    let mut sorted: Vec<&str> = members.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let Some(i) = sorted.iter().position(|m| *m == me) else { return Vec::new() };
    (0..REPORT_PARTITIONS).filter(|p| usize::from(*p) % sorted.len() == i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_never_changes() {
        // Gateways and workers of different releases must agree: these values are the contract.
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a(b"foobar"), 0xbf9c_f968);
        let stage = EnvId::parse("a1b2c3d4e5f6a7b8c9d0e1f2").unwrap();
        assert_eq!(of_stage(&stage), (fnv1a(b"a1b2c3d4e5f6a7b8c9d0e1f2") % 16) as u16);
        assert_eq!(of_host(&HostId::parse("i-0123456789abcdef0").unwrap()), of_key("i-0123456789abcdef0"));
    }

    #[test]
    fn keys_spread_over_every_partition() {
        let mut counts = [0u32; REPORT_PARTITIONS as usize];
        for i in 0..16_000 {
            counts[usize::from(of_key(&format!("host-{i:06}")))] += 1;
        }
        // 1,000 expected each; FNV-1a over sequential names stays within a fifth of it.
        assert!(counts.iter().all(|c| (800..=1200).contains(c)), "{counts:?}");
    }

    #[test]
    fn every_partition_has_exactly_one_owner_and_shares_differ_by_one_at_most() {
        for n in 1..=20usize {
            let members: Vec<String> = (0..n).rev().map(|i| format!("worker-{i:02}")).collect();
            let mut owners = [0u32; REPORT_PARTITIONS as usize];
            let mut shares = Vec::new();
            for m in &members {
                let mine = assigned(&members, m);
                shares.push(mine.len());
                for p in mine {
                    owners[usize::from(p)] += 1;
                }
            }
            assert!(owners.iter().all(|o| *o == 1), "{n} workers: {owners:?}");
            let (min, max) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
            assert!(max - min <= 1, "{n} workers: {shares:?}");
        }
    }

    #[test]
    fn a_worker_that_is_not_a_member_consumes_nothing_and_duplicates_count_once() {
        let members = vec!["b".to_string(), "a".to_string(), "a".to_string()];
        assert!(assigned(&members, "c").is_empty());
        assert_eq!(assigned(&members, "a"), vec![0, 2, 4, 6, 8, 10, 12, 14]);
        assert_eq!(assigned(&members, "b"), vec![1, 3, 5, 7, 9, 11, 13, 15]);
    }
}
