//! The fleet that `ops/bench/sql/seed.sql` writes into Postgres, seen from the agents' side:
//! which stage and deploy each host is on, and the ping its agent sends in that state.
//!
//! Both sides follow one naming scheme (described at the top of the SQL file); the tests
//! below check that the SQL still spells it the way this module does.

use std::fmt::Write;

/// The work stages a mid-deploy host may be in, in the SQL's order.
const WORK_STAGES: [&str; 7] =
    ["PRE_DOWNLOAD", "DOWNLOADING", "POST_DOWNLOAD", "STAGING", "PRE_RESTART", "RESTARTING", "POST_RESTART"];

/// What a seeded host is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRole {
    /// On the current deploy, in a work stage, its step running (status UNKNOWN): out of
    /// service, holding a slot of the cap.
    Deploying(&'static str),
    /// Serving the current deploy's build.
    Done,
    /// Serving the previous deploy's build, waiting for admission.
    Waiting,
}

/// The seeded fleet: `hosts` hosts dealt round-robin over `stages` stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seeded {
    /// Number of hosts.
    pub hosts: u32,
    /// Number of stages (at most 1000: stage numbers have three digits).
    pub stages: u32,
}

/// Id (and name) of host `i`.
pub fn host_id(i: u32) -> String {
    format!("h-{i:07}")
}

/// Three-digit stage number, as in every stage-level name.
fn k3(k: u32) -> String {
    format!("{k:03}")
}

/// Id of stage `k`.
pub fn env_id(k: u32) -> String {
    format!("bench-env-{}", k3(k))
}

/// Group of stage `k` (its group capacity).
pub fn group(k: u32) -> String {
    format!("bench-grp-{}", k3(k))
}

/// Deploy `v` (1: previous, 2: current) of stage `k`.
pub fn deploy_id(v: u32, k: u32) -> String {
    format!("bench-d{v}-{}", k3(k))
}

impl Seeded {
    /// The stage of host `i`.
    pub fn stage_of(&self, i: u32) -> u32 {
        i % self.stages.max(1)
    }

    /// What host `i` is doing.
    pub fn role(&self, i: u32) -> HostRole {
        let j = i / self.stages.max(1);
        match j % 10 {
            0 => HostRole::Deploying(WORK_STAGES[((j / 10) % 7) as usize]),
            1..=4 => HostRole::Done,
            _ => HostRole::Waiting,
        }
    }

    /// The ping host `i` sends in its seeded state, shaped like Teletraan's agent's
    /// (`teletraan-agent-wire.md`): every field present, one report, written into `out`.
    pub fn ping_body(&self, i: u32, out: &mut String) {
        let k = self.stage_of(i);
        let (deploy, stage, status) = match self.role(i) {
            HostRole::Deploying(stage) => (deploy_id(2, k), stage, "UNKNOWN"),
            HostRole::Done => (deploy_id(2, k), "SERVING_BUILD", "SUCCEEDED"),
            HostRole::Waiting => (deploy_id(1, k), "SERVING_BUILD", "SUCCEEDED"),
        };
        let (id, grp) = (host_id(i), group(k));
        out.clear();
        // Formatting into a String cannot fail.
        let _ = write!(
            out,
            concat!(
                r#"{{"hostId":"{id}","hostName":"{id}","hostIp":"10.{a}.{b}.{c}","autoscalingGroup":"{grp}","#,
                r#""availabilityZone":"us-east-1a","agentVersion":"1.2.76","groups":["{grp}"],"#,
                r#""normandieStatus":"ERROR","knoxStatus":"ERROR","reports":[{{"deployId":"{deploy}","#,
                r#""envId":"{env}","deployStage":"{stage}","agentStatus":"{status}","errorCode":0,"#,
                r#""errorMessage":null,"failCount":0,"deployAlias":null,"containerHealthStatus":null,"#,
                r#""agentState":null}}]}}"#
            ),
            id = id,
            a = (i >> 16) & 0xff,
            b = (i >> 8) & 0xff,
            c = i & 0xff,
            grp = grp,
            deploy = deploy,
            env = env_id(k),
            stage = stage,
            status = status,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::ping::PingRequest;

    const SEED_SQL: &str = include_str!("../../bench/sql/seed.sql");

    #[test]
    fn the_seed_sql_spells_the_same_names() {
        for fragment in [
            "'h-' || lpad(i::text, 7, '0')",
            "i % :stages AS k, i / :stages AS j",
            "'bench-env-' || lpad(k::text, 3, '0')",
            "'bench-grp-' || lpad(k::text, 3, '0')",
            "'bench-d' || v || '-' || lpad(k::text, 3, '0')",
            "CASE WHEN f.j % 10 <= 4 THEN 'bench-d2-' ELSE 'bench-d1-' END",
            "CASE WHEN f.j % 10 = 0 THEN 'UNKNOWN' ELSE 'SUCCEEDED' END",
            "[(f.j / 10) % 7 + 1]",
        ] {
            assert!(SEED_SQL.contains(fragment), "seed.sql no longer contains {fragment:?}");
        }
        let list = WORK_STAGES.map(|s| format!("'{s}'")).join(", ");
        let sql: String = SEED_SQL.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(sql.contains(&format!("ARRAY[{list}]")), "the work stages differ from seed.sql");
    }

    #[test]
    fn roles_follow_the_rank_in_the_stage() {
        let s = Seeded { hosts: 100_000, stages: 100 };
        assert_eq!((s.stage_of(0), s.role(0)), (0, HostRole::Deploying("PRE_DOWNLOAD")));
        assert_eq!(s.role(100), HostRole::Done, "rank 1 of stage 0");
        assert_eq!(s.role(599), HostRole::Waiting, "rank 5 of stage 99");
        assert_eq!(s.role(1000), HostRole::Deploying("DOWNLOADING"), "rank 10");
        let per_stage: Vec<HostRole> = (0..1000).map(|j| s.role(j * 100 + 7)).collect();
        let deploying = per_stage.iter().filter(|r| matches!(r, HostRole::Deploying(_))).count();
        assert_eq!(deploying, 100, "exactly the cap of a 1,000-host stage at 10 %");
    }

    #[test]
    fn pings_parse_and_normalise_like_a_real_agents() {
        let s = Seeded { hosts: 1000, stages: 10 };
        let mut body = String::new();
        for i in [0, 10, 55, 999] {
            s.ping_body(i, &mut body);
            let req: PingRequest = serde_json::from_str(&body).unwrap();
            let (host, reports) = req.normalize().unwrap();
            assert_eq!(host.host_id.as_str(), host_id(i));
            assert_eq!(host.groups[0].as_str(), group(i % 10));
            assert_eq!(reports.len(), 1);
            assert_eq!(reports[0].env_id.as_str(), env_id(i % 10));
        }
        s.ping_body(55, &mut body);
        assert!(body.contains("\"deployId\":\"bench-d1-005\""), "{body}");
        assert!(body.contains("\"errorMessage\":null"), "every report field is present");
    }
}
