//! Reputation: a memory of each remote endpoint, and the class and flags it earns.
//!
//! - `history.rs`: [`history::HostHistory`], per (direction, IP), fed by observations and
//!   mergeable (associative), so histories rebuilt from ClickHouse partitions combine.
//! - `thresholds.rs`: [`thresholds::Thresholds`] from a TOML file with documented defaults.
//! - `classify.rs`: [`classify::classify`], a pure function of history, thresholds and time, and
//!   the global guard and domain view.
//! - `codec.rs`: [`codec::encode`] / [`codec::decode`], the compact binary form of a history that
//!   `IndraStore` keeps in memory and on disk.
//! - `store.rs`: [`store::ReputationStore`], where histories and the name graph live between runs,
//!   and [`store::record`], which folds observations into one; its conformance suite.
//! - `memory.rs`: [`memory::MemoryStore`], the reference backend in ordered maps, not persisted.
//! - `indra.rs`: [`indra::IndraStore`], the backend on an IndraDB graph, saved atomically.
//!
//! **Architecture Invariant:** classification does no IO and reads no clock: `now` is a
//! parameter, so the streaming path and a rebuild from ClickHouse give the same answer.

pub mod classify;
pub mod codec;
pub mod history;
pub mod indra;
pub mod memory;
pub mod store;
pub mod thresholds;
