//! The rollout rules as pure functions: called by the gateway (goals per ping) and the workers
//! (admission, deploy state), unit-tested without IO.

pub mod admission;
pub mod deploy_state;
pub mod goal;
pub mod stage_seq;
