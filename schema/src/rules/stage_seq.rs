//! The per-host stage sequence of a deploy.

use crate::DeployStage::{self, *};

/// The stages every deploy walks through, in order (the same for every deploy type).
pub const ROLLOUT: [DeployStage; 8] =
    [PreDownload, Downloading, PostDownload, Staging, PreRestart, Restarting, PostRestart, ServingBuild];

/// The stage after `stage` succeeded. Terminal stages (SERVING_BUILD, STOPPED) map to
/// themselves; UNKNOWN starts the rollout; STOPPING leads to STOPPED.
pub const fn next_stage(stage: DeployStage) -> DeployStage {
    match stage {
        Unknown => PreDownload,
        PreDownload => Downloading,
        Downloading => PostDownload,
        PostDownload => Staging,
        Staging => PreRestart,
        PreRestart => Restarting,
        Restarting => PostRestart,
        PostRestart => ServingBuild,
        ServingBuild => ServingBuild,
        Stopping => Stopped,
        Stopped => Stopped,
    }
}

/// Whether an agent runs a hook script of the build for this stage (DOWNLOADING and STAGING
/// are built into the agent).
pub const fn runs_hook(stage: DeployStage) -> bool {
    match stage {
        Downloading | Staging | Unknown => false,
        PreDownload | PostDownload | PreRestart | Restarting | PostRestart | ServingBuild | Stopping | Stopped => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_visits_every_stage_once_in_order() {
        let mut stage = Unknown;
        let mut seen = Vec::new();
        while stage != ServingBuild {
            stage = next_stage(stage);
            seen.push(stage);
        }
        assert_eq!(seen, ROLLOUT);
    }

    #[test]
    fn terminal_stages_stay_put() {
        assert_eq!(next_stage(ServingBuild), ServingBuild);
        assert_eq!(next_stage(Stopped), Stopped);
        assert_eq!(next_stage(Stopping), Stopped);
    }

    #[test]
    fn every_stage_has_a_successor_that_is_a_rollout_or_stop_stage() {
        for s in DeployStage::ALL {
            let n = next_stage(*s);
            assert!(ROLLOUT.contains(&n) || matches!(n, Stopped), "{s} -> {n}");
        }
    }

    #[test]
    fn built_in_stages_run_no_hook() {
        assert!(!runs_hook(Downloading) && !runs_hook(Staging));
        assert!(runs_hook(Restarting) && runs_hook(PreDownload) && runs_hook(Stopping));
    }
}
