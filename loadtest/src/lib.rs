//! A load generator for any Matrix homeserver. It speaks only the client-server API
//! (so the same run measures this server and Synapse alike), bounds every loop in
//! count and time, and reads the server's CPU time and memory from `/proc` when it is
//! given the server's process ids.

pub mod client;
pub mod compare;
pub mod phases;
pub mod stats;

pub use phases::{Plan, Report, Run};
