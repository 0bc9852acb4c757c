//! Shared pieces of the operator binary that tests also use.

pub mod bench;
pub mod sample;
pub mod sim;
