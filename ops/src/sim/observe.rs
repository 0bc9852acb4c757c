//! The fleet's record of what its hosts did: a bounded timeline of events and the rollout
//! book, behind one lock taken for a moment per step (never across an await).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use schema::{AgentStatus, DeployStage};

use super::rollout::{RolloutBook, Tags};

/// What an event says a host did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// It took a goal (status UNKNOWN).
    Goal,
    /// It finished the step (status: the outcome).
    Result,
    /// It forgot the environment (DELETE).
    Delete,
}

/// One entry of the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Time since the fleet started.
    pub at: Duration,
    /// Host name.
    pub host: Arc<str>,
    /// Environment name.
    pub env: Arc<str>,
    /// Deploy id.
    pub deploy: Arc<str>,
    /// The step.
    pub stage: DeployStage,
    /// Its status (UNKNOWN when taken).
    pub status: AgentStatus,
    /// What happened.
    pub kind: EventKind,
    /// The goal said `firstDeploy` (the server lets first deploys skip the caps).
    pub first_deploy: bool,
}

/// Timeline, rollout book and the strings they share.
#[derive(Debug)]
pub(crate) struct Observer {
    capacity: usize,
    timeline: VecDeque<Event>,
    dropped: u64,
    book: RolloutBook,
    strings: HashMap<Box<str>, Arc<str>>,
}

/// One move of one host, as the agent loop reports it.
pub(crate) struct Move<'a> {
    pub at: Duration,
    pub host: u32,
    pub host_name: &'a Arc<str>,
    pub env: &'a str,
    pub deploy: &'a str,
    pub stage: DeployStage,
    pub status: AgentStatus,
    pub kind: EventKind,
    /// For a taken goal: the host served a build of the environment.
    pub was_serving: bool,
    /// The goal's `firstDeploy`.
    pub first_deploy: bool,
}

impl Observer {
    pub fn new(capacity: usize, host_tags: Vec<Tags>) -> Observer {
        Observer {
            capacity,
            timeline: VecDeque::with_capacity(capacity.min(4096)),
            dropped: 0,
            book: RolloutBook::new(host_tags),
            strings: HashMap::new(),
        }
    }

    /// Environment names and deploy ids are few: each is stored once and shared.
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(Box::from(s), a.clone());
        a
    }

    pub fn record(&mut self, m: Move<'_>) {
        let env = self.intern(m.env);
        let deploy = self.intern(m.deploy);
        match (m.kind, m.stage) {
            (EventKind::Goal, DeployStage::PreDownload) => {
                self.book.start(m.at, m.host, &env, &deploy, m.was_serving, m.first_deploy)
            }
            (EventKind::Goal, DeployStage::ServingBuild) => self.book.back(m.at, m.host, &env, &deploy),
            (EventKind::Delete, _) => self.book.leave(m.at, m.host, &env),
            _ => {}
        }
        if self.capacity == 0 {
            self.dropped += 1;
            return;
        }
        if self.timeline.len() == self.capacity {
            self.timeline.pop_front();
            self.dropped += 1;
        }
        self.timeline.push_back(Event {
            at: m.at,
            host: m.host_name.clone(),
            env,
            deploy,
            stage: m.stage,
            status: m.status,
            kind: m.kind,
            first_deploy: m.first_deploy,
        });
    }

    pub fn timeline(&self) -> Vec<Event> {
        self.timeline.iter().cloned().collect()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn book(&self) -> &RolloutBook {
        &self.book
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv<'a>(name: &'a Arc<str>, at: u64, stage: DeployStage, kind: EventKind) -> Move<'a> {
        Move {
            at: Duration::from_millis(at),
            host: 0,
            host_name: name,
            env: "web",
            deploy: "d1",
            stage,
            status: AgentStatus::Unknown,
            kind,
            was_serving: true,
            first_deploy: false,
        }
    }

    #[test]
    fn the_timeline_keeps_the_latest_events_and_the_book_sees_them_all() {
        let name: Arc<str> = Arc::from("h1");
        let mut o = Observer::new(2, vec![Vec::new()]);
        o.record(mv(&name, 1, DeployStage::PreDownload, EventKind::Goal));
        o.record(mv(&name, 2, DeployStage::PreDownload, EventKind::Result));
        o.record(mv(&name, 3, DeployStage::ServingBuild, EventKind::Goal));
        let t = o.timeline();
        assert_eq!(t.iter().map(|e| e.at.as_millis()).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(o.dropped(), 1);
        assert!(Arc::ptr_eq(&t[0].deploy, &t[1].deploy), "deploy ids are shared");
        let r = o.book().report("d1").unwrap();
        assert_eq!((r.max_out, r.hosts_done, r.out_now), (1, 1, 0));

        let mut counters_only = Observer::new(0, vec![Vec::new()]);
        counters_only.record(mv(&name, 1, DeployStage::PreDownload, EventKind::Goal));
        assert!(counters_only.timeline().is_empty());
        assert_eq!(counters_only.book().report("d1").unwrap().out_now, 1);
    }
}
