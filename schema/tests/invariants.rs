//! Property tests of the rollout rules over random fleets and event orders.

use proptest::prelude::*;
use schema::ping::ReportIn;
use schema::rules::admission::{self, StageAdmission, parallel_cap};
use schema::rules::constraint::{Constraint, TagOf, TaggedHost};
use schema::rules::deploy_state::{self, DeployFacts, Progress};
use schema::rules::goal::{AgentRecord, CurrentDeploy, EnvInput, RecordChange, StageGoal, plan};
use schema::rules::schedule::{self, HostNumber, ScheduleConfig, ScheduleProgress, Session};
use schema::{
    AgentState, AgentStatus, DeployConstraintType, DeployId, DeployPriority, DeployStage, DeployState, DeployType,
    EnvId, EnvState, EnvType, HostId, ScheduleState,
};

fn id<T: TryFrom<String>>(s: &str) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(s.to_string()).unwrap()
}

fn stage(deploy: &str) -> StageGoal {
    StageGoal {
        env_id: id("e"),
        env_name: id("web"),
        stage_name: id("prod"),
        stage_type: EnvType::Production,
        env_state: EnvState::Normal,
        priority: DeployPriority::Normal,
        system_priority: None,
        is_docker: false,
        agent_configs: Default::default(),
        script_variables: Default::default(),
        deploy: Some(CurrentDeploy {
            id: id(deploy),
            deploy_type: DeployType::Regular,
            alias: None,
            build: schema::model::Build {
                id: id("b_abc1234"),
                name: id("web"),
                artifact_url: "https://a/x.tgz".into(),
                scm: None,
                repo: "r".into(),
                branch: "main".into(),
                commit: "abc1234".into(),
                commit_short: "abc1234".into(),
                commit_info: None,
                commit_date: 0,
                publish_info: None,
                publisher: "ci".into(),
                publish_date: 0,
                artifact_sha256: None,
            },
        }),
    }
}

const STAGES: [DeployStage; 8] = schema::rules::stage_seq::ROLLOUT;

fn any_status() -> impl Strategy<Value = AgentStatus> {
    prop::sample::select(AgentStatus::ALL.to_vec())
}

fn any_state() -> impl Strategy<Value = AgentState> {
    prop::sample::select(AgentState::ALL.to_vec())
}

/// One host of the simulated fleet: its record on the server and what its agent knows.
#[derive(Debug, Clone)]
struct Host {
    record: Option<AgentRecord>,
    report: Option<ReportIn>,
    /// The agent serves a build (it finished a deploy's SERVING_BUILD).
    serving: bool,
    /// The agent left service for the second deploy and has not finished it.
    out: bool,
}

fn report_of(r: &AgentRecord, status: AgentStatus) -> ReportIn {
    ReportIn {
        env_id: id("e"),
        deploy_id: r.deploy_id.clone(),
        stage: r.stage,
        status,
        err_no: 0,
        err_msg: None,
        fail_count: 0,
        deploy_alias: None,
        container_health: String::new(),
        reset_by_system: false,
    }
}

/// What can happen next in the fleet.
#[derive(Debug, Clone)]
enum Step {
    /// Host `i` pings (reporting its last step's outcome, which succeeded or failed).
    Ping(prop::sample::Index, bool),
    /// A worker runs admission.
    Admit,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (any::<prop::sample::Index>(), prop::bool::weighted(0.9)).prop_map(|(i, ok)| Step::Ping(i, ok)),
        1 => Just(Step::Admit),
    ]
}

fn admit(hosts: &mut [Host], current: &DeployId, cap: u32) {
    let active = hosts.iter().filter_map(|h| h.record.as_ref()).filter(|r| r.is_active()).count() as u32;
    let waiting: Vec<HostId> = hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| h.record.as_ref().is_some_and(|r| admission::waits_for_admission(r, current, None)))
        .map(|(i, _)| id(&format!("h{i}")))
        .collect();
    let a = StageAdmission { cap, active, schedule_allowance: None, constraint: None };
    for chosen in admission::select(&a, &waiting) {
        let i: usize = chosen.as_str()[1..].parse().unwrap();
        hosts[i].record = Some(AgentRecord::fresh(current.clone(), false));
    }
}

/// One ping of host `h` to a gateway that admits first deploys only; the agent then runs the
/// step it was given.
fn ping(h: &mut Host, s: &StageGoal, ok: bool, second: &DeployId) {
    let env_id: EnvId = id("e");
    let input = EnvInput {
        env_id: &env_id,
        stage: Some(s),
        report: h.report.as_ref(),
        record: h.record.as_ref(),
        env_installed: false,
        names: None,
    };
    let p = plan(&[input], |_, install| install.record.first_deploy);
    if let Some((_, RecordChange::Upsert(r))) = p.records.into_iter().next() {
        h.record = Some(r);
    }
    if let Some(goal) = p.response.deploy_goal {
        if &goal.deploy_id == second && goal.deploy_stage == DeployStage::PreDownload && h.serving && !h.out {
            h.out = true;
        }
        let done = goal.deploy_stage == DeployStage::ServingBuild;
        let status = if ok || done { AgentStatus::Succeeded } else { AgentStatus::ScriptFailed };
        if done {
            h.serving = true;
            if &goal.deploy_id == second {
                h.out = false;
            }
        }
        let record = h.record.clone().unwrap_or_else(|| AgentRecord::fresh(goal.deploy_id.clone(), true));
        h.report = Some(ReportIn { deploy_id: goal.deploy_id, stage: goal.deploy_stage, ..report_of(&record, status) });
    }
}

fn existing(hosts: &[Host]) -> u32 {
    hosts.iter().filter(|h| h.record.as_ref().is_some_and(|r| !r.first_deploy)).count() as u32
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A fleet of new hosts gets a first deploy; at a random moment a second deploy replaces
    /// it. Whatever the order of pings, step results and admissions, the hosts the agents see
    /// leave service for the second deploy (hosts serving a build when it reached them) never
    /// exceed the cap, and once the pings stop failing every host ends on it.
    #[test]
    fn hosts_deploying_at_once_never_exceed_the_cap(
        n in 1usize..25,
        max_parallel in 0i32..5,
        pct in 0i32..60,
        switch_at in 0usize..200,
        steps in prop::collection::vec(step(), 1..400),
    ) {
        prop_assume!(max_parallel > 0 || pct > 0);
        let first = stage("first");
        let second = stage("second");
        let second_id = second.deploy.as_ref().unwrap().id.clone();
        let mut hosts: Vec<Host> = (0..n).map(|_| Host { record: None, report: None, serving: false, out: false }).collect();
        let cap_max = parallel_cap(max_parallel, pct, n as u32);
        for (k, s) in steps.into_iter().enumerate() {
            let current = if k < switch_at { &first } else { &second };
            let current_id = current.deploy.as_ref().unwrap().id.clone();
            match s {
                Step::Admit => {
                    let cap = parallel_cap(max_parallel, pct, existing(&hosts));
                    admit(&mut hosts, &current_id, cap);
                }
                Step::Ping(i, ok) => {
                    let i = i.index(n);
                    ping(&mut hosts[i], current, ok, &second_id);
                }
            }
            let out = hosts.iter().filter(|h| h.out).count() as u32;
            prop_assert!(out <= cap_max, "{} hosts left service for the second deploy with a cap of {}", out, cap_max);
        }
        // Then everything succeeds: the second deploy completes.
        for _ in 0..(n * 30) {
            let cap = parallel_cap(max_parallel, pct, existing(&hosts));
            admit(&mut hosts, &second_id, cap);
            for h in hosts.iter_mut() {
                ping(h, &second, true, &second_id);
            }
            let out = hosts.iter().filter(|h| h.out).count() as u32;
            prop_assert!(out <= cap_max);
        }
        for h in &hosts {
            let r = h.record.as_ref().unwrap();
            prop_assert_eq!(&r.deploy_id, &second_id);
            prop_assert_eq!(r.stage, DeployStage::ServingBuild);
        }
    }

    /// The same report applied twice changes nothing the second time.
    #[test]
    fn the_same_report_twice_changes_nothing(
        stage_i in 0usize..8,
        status in any_status(),
        state in any_state(),
        on_current in any::<bool>(),
        first_deploy in any::<bool>(),
    ) {
        let s = stage("cur");
        let env_id: EnvId = id("e");
        let deploy: DeployId = if on_current { id("cur") } else { id("old") };
        let record = AgentRecord { stage: STAGES[stage_i], status, state, first_deploy, ..AgentRecord::fresh(deploy.clone(), first_deploy) };
        let report = ReportIn { deploy_id: deploy, ..report_of(&record, status) };
        let once = |rec: &AgentRecord| {
            let input = EnvInput { env_id: &env_id, stage: Some(&s), report: Some(&report), record: Some(rec), env_installed: true, names: None };
            plan(&[input], |_, _| false)
        };
        let first = once(&record);
        // The record the first ping left, when no goal was chosen (a chosen goal's record
        // describes the next step, which the agent has not reported yet).
        if first.chosen.is_none()
            && let Some((_, RecordChange::Upsert(after))) = first.records.first()
        {
            let second = once(after);
            prop_assert_eq!(&second.records, &first.records);
            prop_assert_eq!(second.response, first.response);
        }
    }

    /// A finished deploy accepts no event, whatever the counts and the clock.
    #[test]
    fn a_finished_deploy_accepts_no_event(
        finished in prop::sample::select(vec![DeployState::Succeeded, DeployState::Aborted]),
        total in 0u32..100, succeeded in 0u32..100, failed in 0u32..100, now in 0i64..10_000_000_000,
        th in 0i32..=10000,
    ) {
        let facts = DeployFacts {
            state: finished, stored: Progress::default(), last_update: 0, succeeded_before: true,
            success_threshold: th, stuck_threshold_secs: 600, schedule_cooling_down: false,
        };
        let progress = Progress { total, succeeded, failed };
        prop_assert!(deploy_state::evaluate(&facts, progress, now).is_none());
    }
}

/// A host of a stage rolling out one deploy, as the rollout test below tracks it itself (not
/// from what the rules compute), and its record as the rules see it.
#[derive(Debug, Clone)]
struct Rolling {
    id: HostId,
    zone: Option<u8>,
    /// Its tags (its zone among them) have reached the store.
    tags_stored: bool,
    record: AgentRecord,
    /// Chosen by admission for the deploy.
    admitted: bool,
    /// Reached SERVING_BUILD on it.
    finished: bool,
    /// Went silent mid-deploy (the janitor marked it UNREACHABLE).
    lost: bool,
    /// Held by an operator.
    held: bool,
}

/// What happens next in the stage.
#[derive(Debug, Clone)]
enum Event {
    /// Minutes pass, then a worker re-evaluates the stage: the schedule moves, admission runs.
    Evaluate(u8),
    /// Host `i` reports its next step done.
    Progress(prop::sample::Index),
    /// Host `i` goes silent mid-deploy.
    Lost(prop::sample::Index),
    /// An operator holds host `i`.
    Hold(prop::sample::Index),
    /// An operator ends the schedule's current session early.
    Override,
    /// Host `i`'s tags reach the store (they come up to a heartbeat round after its record).
    TagsStored(prop::sample::Index),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => (0u8..40).prop_map(Event::Evaluate),
        8 => any::<prop::sample::Index>().prop_map(Event::Progress),
        1 => any::<prop::sample::Index>().prop_map(Event::Lost),
        1 => any::<prop::sample::Index>().prop_map(Event::Hold),
        1 => Just(Event::Override),
        2 => any::<prop::sample::Index>().prop_map(Event::TagsStored),
    ]
}

/// A schedule: sessions of a count or a percentage of hosts, each with a cooldown.
fn any_schedule() -> impl Strategy<Value = Option<ScheduleConfig>> {
    let session =
        (prop_oneof![(1u32..6).prop_map(HostNumber::Count), (1u32..=100).prop_map(HostNumber::Percent)], 0i32..30)
            .prop_map(|(hosts, cooldown_minutes)| Session { hosts, cooldown_minutes });
    prop::option::weighted(0.5, prop::collection::vec(session, 1..4).prop_map(|sessions| ScheduleConfig { sessions }))
}

fn any_constraint() -> impl Strategy<Value = Option<Constraint>> {
    let kind =
        prop::sample::select(vec![DeployConstraintType::AllGroupsInParallel, DeployConstraintType::GroupByGroup]);
    prop::option::weighted(0.5, (1i64..4, kind).prop_map(|(n, kind)| Constraint::new("az", n, kind).unwrap()))
}

/// The stage's cap restated from its definition: the count, the percentage of the hosts
/// rounded down, or the smaller of both; at least 1, at most the hosts.
fn cap_of(max_parallel: i32, pct: i32, hosts: u32) -> u32 {
    let by_pct = (pct > 0).then(|| hosts * pct.min(100) as u32 / 100);
    let by_count = (max_parallel > 0).then_some(max_parallel as u32);
    let cap = match (by_count, by_pct) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => 1,
    };
    cap.clamp(1, hosts.max(1))
}

/// What a worker does for the stage at `now`, through the rules it uses: the schedule moves
/// (`schedule::advance`), then admission (`admission::select`) with the cap, the slots that
/// hosts lost mid-deploy free (`admission::charged`), the schedule's allowance and the
/// constraint, counted from the records as the store counts them. Returns the hosts chosen.
fn evaluate(
    hosts: &mut [Rolling],
    current: &DeployId,
    (max_parallel, pct): (i32, i32),
    schedule: Option<(&ScheduleConfig, &mut ScheduleProgress)>,
    constraint: Option<&Constraint>,
    now: i64,
) -> Vec<usize> {
    let on_current = |r: &AgentRecord| &r.deploy_id == current;
    let total = hosts.len() as u32;
    let existing = hosts.iter().filter(|h| !h.record.first_deploy).count() as u32;
    let cap = parallel_cap(max_parallel, pct, existing);
    let active = hosts.iter().filter(|h| h.record.is_active()).count() as u32;
    let lost = hosts
        .iter()
        .filter(|h| {
            h.record.state == AgentState::Unreachable
                && on_current(&h.record)
                && h.record.stage != DeployStage::ServingBuild
        })
        .count() as u32;
    let on_deploy = hosts.iter().filter(|h| on_current(&h.record)).count() as u32;
    // Serving it, or held, failed or lost on it (`store::deploys::progress`, `store::agents::admit`).
    let done = |r: &AgentRecord| {
        on_current(r)
            && (r.stage == DeployStage::ServingBuild
                || matches!(r.state, AgentState::PausedByUser | AgentState::PausedBySystem | AgentState::Unreachable))
    };
    let finished = hosts.iter().filter(|h| done(&h.record)).count() as u32;
    let allowance = schedule.map(|(config, progress)| {
        *progress = schedule::advance(config, *progress, finished, total, now);
        schedule::allowance(config, *progress, on_deploy, total)
    });
    let tagged: Vec<TaggedHost> = hosts
        .iter()
        .map(|h| TaggedHost {
            host_id: h.id.clone(),
            tag: match (h.tags_stored, h.zone) {
                (false, _) => TagOf::Unknown,
                (true, None) => TagOf::Untagged,
                (true, Some(z)) => TagOf::Value(format!("zone-{z}")),
            },
            active: h.record.is_active(),
            done: done(&h.record),
        })
        .collect();
    let waiting: Vec<HostId> = hosts
        .iter()
        .filter(|h| admission::waits_for_admission(&h.record, current, None))
        .map(|h| h.id.clone())
        .collect();
    let a = StageAdmission {
        cap,
        active: admission::charged(active, lost, cap),
        schedule_allowance: allowance.flatten(),
        constraint: constraint.map(|c| (c, tagged.as_slice())),
    };
    let chosen = admission::select(&a, &waiting);
    let mut out = Vec::new();
    for h in &chosen {
        let i = hosts.iter().position(|x| &x.id == h).expect("admission chose a host of the stage");
        hosts[i].record = AgentRecord::fresh(current.clone(), false);
        hosts[i].admitted = true;
        out.push(i);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// A stage of serving hosts takes a new deploy while hosts report steps, go silent, are
    /// held, minutes pass, operators end sessions early and hosts' tags reach the store late,
    /// in any order; admission runs
    /// through the real rules (cap, lost hosts, schedule, constraint). Checked from the hosts'
    /// own tracking after every evaluation: hosts out of service never exceed the cap (hosts
    /// lost mid-deploy free their slots, but only a cap of them), a schedule's session never
    /// lets in more hosts than it allows and none while cooling down, a constraint's value
    /// never has more hosts out than its limit, a value starts only after every lower one
    /// finished (GROUP_BY_GROUP; by the hosts' real zones, known to the store or not),
    /// untagged hosts and hosts whose tags the store lacks never start under a constraint,
    /// held and lost hosts are never chosen. And once the events stop, the rollout reaches every host it can.
    #[test]
    fn admission_holds_the_cap_the_schedule_and_the_constraint_through_random_events(
        n in 1usize..30,
        max_parallel in 0i32..6,
        pct in 0i32..101,
        zones in prop::collection::vec(prop::option::weighted(0.9, 0u8..4), 30),
        tags_stored in prop::collection::vec(prop::bool::weighted(0.8), 30),
        schedule in any_schedule(),
        constraint in any_constraint(),
        events in prop::collection::vec(event(), 0..300),
    ) {
        prop_assume!(max_parallel > 0 || pct > 0);
        let old: DeployId = id("old");
        let current: DeployId = id("new");
        let serving_old = AgentRecord { stage: DeployStage::ServingBuild, ..AgentRecord::fresh(old.clone(), false) };
        let mut hosts: Vec<Rolling> = (0..n)
            .map(|i| Rolling {
                id: id(&format!("h{i:02}")),
                zone: zones[i],
                tags_stored: tags_stored[i],
                record: serving_old.clone(),
                admitted: false,
                finished: false,
                lost: false,
                held: false,
            })
            .collect();
        let cap = cap_of(max_parallel, pct, n as u32);
        let mut progress = schedule::start(0);
        let mut now = 0i64;
        let check = |hosts: &[Rolling], chosen: &[usize], progress: &ScheduleProgress|
            -> Result<(), TestCaseError> {
            let out = hosts.iter().filter(|h| h.admitted && !h.finished && !h.lost && !h.held).count() as u32;
            let lost = hosts.iter().filter(|h| h.lost).count() as u32;
            prop_assert!(out + lost.saturating_sub(cap) <= cap,
                "{} hosts out of service and {} lost with a cap of {}", out, lost, cap);
            for &i in chosen {
                prop_assert!(!hosts[i].lost && !hosts[i].held, "a lost or held host was chosen");
            }
            if let Some(config) = &schedule
                && !chosen.is_empty()
            {
                prop_assert!(progress.state != ScheduleState::CoolingDown, "hosts started during a cooldown");
                if progress.state == ScheduleState::Running {
                    let on_deploy = hosts.iter().filter(|h| h.admitted).count() as u32;
                    prop_assert!(on_deploy <= config.allowed(progress.session, n as u32),
                        "{} hosts on the deploy in session {} of {:?}", on_deploy, progress.session, config);
                }
            }
            if let Some(c) = &constraint {
                for &i in chosen {
                    prop_assert!(hosts[i].tags_stored, "a host started before its tags reached the store");
                    let Some(z) = hosts[i].zone else {
                        return Err(TestCaseError::fail("an untagged host started under a constraint"));
                    };
                    let busy = hosts.iter().filter(|h| h.zone == Some(z) && h.admitted && !h.finished && !h.lost && !h.held).count() as u32;
                    prop_assert!(busy <= c.max_parallel, "{} hosts of zone {} out with a limit of {}", busy, z, c.max_parallel);
                    if c.kind == DeployConstraintType::GroupByGroup {
                        let lower_unfinished =
                            hosts.iter().any(|h| h.zone.is_some_and(|y| y < z) && !h.finished && !h.held && !h.lost);
                        prop_assert!(!lower_unfinished, "zone {} started before a lower zone finished", z);
                    }
                }
            }
            Ok(())
        };
        for e in events {
            match e {
                Event::Evaluate(minutes) => {
                    now += i64::from(minutes) * 60_000;
                    let chosen = evaluate(&mut hosts, &current, (max_parallel, pct),
                        schedule.as_ref().map(|c| (c, &mut progress)), constraint.as_ref(), now);
                    check(&hosts, &chosen, &progress)?;
                }
                Event::Progress(i) => {
                    let h = &mut hosts[i.index(n)];
                    if h.admitted && !h.finished && !h.lost && !h.held {
                        let k = STAGES.iter().position(|s| *s == h.record.stage).unwrap();
                        h.record.stage = STAGES[k + 1];
                        h.finished = h.record.stage == DeployStage::ServingBuild;
                    }
                }
                Event::Lost(i) => {
                    let h = &mut hosts[i.index(n)];
                    if h.admitted && !h.finished && !h.held && !h.lost {
                        h.record.state = AgentState::Unreachable;
                        h.lost = true;
                    }
                }
                Event::Hold(i) => {
                    let h = &mut hosts[i.index(n)];
                    if !h.lost {
                        h.record.state = AgentState::PausedByUser;
                        h.held = true;
                    }
                }
                Event::Override => {
                    if let Some(config) = &schedule
                        && let Some(p) = schedule::override_session(config, progress, progress.session, now)
                    {
                        progress = p;
                    }
                }
                Event::TagsStored(i) => hosts[i.index(n)].tags_stored = true,
            }
        }
        for h in &mut hosts {
            h.tags_stored = true;
        }
        // The events stop: hours pass, every host that started finishes its steps.
        for _ in 0..(n * 10 + 20) {
            now += 3_600_000;
            let chosen = evaluate(&mut hosts, &current, (max_parallel, pct),
                schedule.as_ref().map(|c| (c, &mut progress)), constraint.as_ref(), now);
            check(&hosts, &chosen, &progress)?;
            for h in hosts.iter_mut().filter(|h| h.admitted && !h.finished && !h.lost && !h.held) {
                h.record.stage = DeployStage::ServingBuild;
                h.finished = true;
            }
        }
        // Every host that can take the deploy did: not held, not lost, tagged when a constraint
        // needs a tag. Lost hosts hold up neither a slot, a session nor a zone, but more of
        // them than the cap stop the rollout; with GROUP_BY_GROUP a host held before it
        // started keeps the zones above its own waiting (until an operator lets it go).
        let lost = hosts.iter().filter(|h| h.lost).count() as u32;
        let blocked = lost > cap
            || constraint.as_ref().is_some_and(|c| c.kind == DeployConstraintType::GroupByGroup
                && hosts.iter().any(|h| h.held && !h.admitted));
        if !blocked {
            for h in &hosts {
                if !h.held && !h.lost && (constraint.is_none() || h.zone.is_some()) {
                    prop_assert!(h.finished, "{} never took the deploy: {:?}", h.id, h);
                }
            }
        }
    }
}
