//! Sources: where log bytes come from (files, stdin, syslog; journald later), and the milter,
//! which receives sessions from the MTA itself. Log sources do IO and framing only; they never
//! interpret MTA messages.

pub mod compressed;
pub mod follow;
pub mod journald;
pub mod lines;
pub mod milter;
pub mod rotated;
pub mod syslog;
