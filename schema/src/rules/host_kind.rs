//! What a host is doing for its stage's current deploy, in the words people read: the board's
//! grid colours and the command line's progress count hosts by these kinds.

use crate::{AgentState, AgentStatus, DeployId, DeployStage};

/// What a host is doing for the stage's current deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostKind {
    /// Serves the current deploy's build.
    Done,
    /// Working through the current deploy's steps (out of service).
    Working,
    /// A step failed and is being retried (out of service).
    Retrying,
    /// Failed for good (paused by the system, or a fatal status).
    Failed,
    /// Held by an operator.
    Paused,
    /// Not yet admitted to the current deploy (serves an older build).
    Waiting,
    /// Its service is stopping or stopped.
    Stopped,
    /// Stopped pinging.
    Gone,
}

impl HostKind {
    /// Every kind, in the legend's order.
    pub const ALL: [HostKind; 8] = [
        HostKind::Done,
        HostKind::Working,
        HostKind::Retrying,
        HostKind::Failed,
        HostKind::Paused,
        HostKind::Waiting,
        HostKind::Stopped,
        HostKind::Gone,
    ];

    /// Its name in a legend or a summary.
    pub fn label(self) -> &'static str {
        match self {
            HostKind::Done => "done",
            HostKind::Working => "deploying",
            HostKind::Retrying => "retrying",
            HostKind::Failed => "failed",
            HostKind::Paused => "paused",
            HostKind::Waiting => "waiting",
            HostKind::Stopped => "stopped",
            HostKind::Gone => "unreachable",
        }
    }

    /// Whether a host of this kind is out of service because of the current deploy (it holds
    /// a slot of the cap).
    pub fn is_deploying(self) -> bool {
        matches!(self, HostKind::Working | HostKind::Retrying)
    }

    /// The kind of a host's record on a stage whose current deploy is `current`.
    pub fn of(
        state: AgentState,
        status: AgentStatus,
        step: DeployStage,
        deploy: &DeployId,
        current: Option<&DeployId>,
    ) -> HostKind {
        match state {
            AgentState::Unreachable => return HostKind::Gone,
            AgentState::Stop | AgentState::Delete => return HostKind::Stopped,
            AgentState::PausedByUser => return HostKind::Paused,
            AgentState::PausedBySystem => return HostKind::Failed,
            AgentState::Normal | AgentState::Reset | AgentState::ResetBySystem => {}
        }
        if matches!(step, DeployStage::Stopping | DeployStage::Stopped) {
            return HostKind::Stopped;
        }
        if status.is_fatal() {
            return HostKind::Failed;
        }
        if current != Some(deploy) {
            return HostKind::Waiting;
        }
        match (step, status) {
            (DeployStage::ServingBuild, AgentStatus::Succeeded) => HostKind::Done,
            (_, AgentStatus::ScriptFailed | AgentStatus::RetryableAgentFailed) => HostKind::Retrying,
            _ => HostKind::Working,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> DeployId {
        DeployId::parse(s).unwrap()
    }

    #[test]
    fn kinds_of_hosts() {
        let (cur, old) = (id("d2"), id("d1"));
        let k = |state, status, step, deploy: &DeployId| HostKind::of(state, status, step, deploy, Some(&cur));
        use AgentState as A;
        use AgentStatus as S;
        use DeployStage as D;
        assert_eq!(k(A::Normal, S::Succeeded, D::ServingBuild, &cur), HostKind::Done);
        assert_eq!(k(A::Normal, S::Succeeded, D::ServingBuild, &old), HostKind::Waiting);
        assert_eq!(k(A::Normal, S::Unknown, D::Downloading, &cur), HostKind::Working);
        assert_eq!(k(A::Normal, S::ScriptFailed, D::Restarting, &cur), HostKind::Retrying);
        assert_eq!(k(A::PausedBySystem, S::TooManyRetry, D::Restarting, &cur), HostKind::Failed);
        assert_eq!(k(A::Normal, S::ScriptTimeout, D::Restarting, &old), HostKind::Failed);
        assert_eq!(k(A::PausedByUser, S::Succeeded, D::ServingBuild, &cur), HostKind::Paused);
        assert_eq!(k(A::Stop, S::Succeeded, D::ServingBuild, &cur), HostKind::Stopped);
        assert_eq!(k(A::Normal, S::Succeeded, D::Stopped, &cur), HostKind::Stopped);
        assert_eq!(k(A::Unreachable, S::Succeeded, D::ServingBuild, &cur), HostKind::Gone);
        assert_eq!(k(A::Reset, S::Unknown, D::PreDownload, &cur), HostKind::Working);
        assert_eq!(HostKind::of(A::Normal, S::Succeeded, D::ServingBuild, &cur, None), HostKind::Waiting);
        let deploying: Vec<_> = HostKind::ALL.into_iter().filter(|k| k.is_deploying()).collect();
        assert_eq!(deploying, [HostKind::Working, HostKind::Retrying]);
    }
}
