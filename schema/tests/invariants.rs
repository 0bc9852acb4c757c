//! Property tests of the rollout rules over random fleets and event orders.

use proptest::prelude::*;
use schema::ping::ReportIn;
use schema::rules::admission::{self, StageAdmission, parallel_cap};
use schema::rules::deploy_state::{self, DeployFacts, Progress};
use schema::rules::goal::{AgentRecord, CurrentDeploy, EnvInput, RecordChange, StageGoal, plan};
use schema::{
    AgentState, AgentStatus, DeployId, DeployPriority, DeployStage, DeployState, DeployType, EnvId, EnvState, EnvType,
    HostId,
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
