//! Reputation: a memory of each remote endpoint, and the class and flags it earns.
//!
//! - `history.rs`: [`history::HostHistory`], per (direction, IP), fed by observations and
//!   mergeable (associative), so histories rebuilt from ClickHouse partitions combine.
//! - `thresholds.rs`: [`thresholds::Thresholds`] from a TOML file with documented defaults.
//! - `classify.rs`: [`classify::classify`], a pure function of history, thresholds and time, and
//!   the global guard and domain view.
//!
//! **Architecture Invariant:** classification does no IO and reads no clock: `now` is a
//! parameter, so the streaming path and a rebuild from ClickHouse give the same answer.

pub mod classify;
pub mod history;
pub mod thresholds;
