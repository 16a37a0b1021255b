//! Sources: where log bytes come from (files and stdin today; syslog, journald and the milter
//! later). Sources do IO and framing only; they never interpret MTA messages.

pub mod follow;
pub mod journald;
pub mod lines;
pub mod syslog;
