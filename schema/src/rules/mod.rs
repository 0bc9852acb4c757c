//! The rollout rules as pure functions: called by the gateway (goals per ping) and the workers
//! (admission, deploy state), unit-tested without IO.

pub mod acceptance;
pub mod access;
pub mod admission;
pub mod agent_state;
pub mod build_tag;
pub mod constraint;
pub mod cron;
pub mod deploy_state;
pub mod freeze;
pub mod goal;
pub mod host_kind;
pub mod identity;
pub mod promote;
pub mod schedule;
pub mod stage_seq;
pub mod webhook;
