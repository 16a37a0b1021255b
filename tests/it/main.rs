//! The single integration-test binary: the real `tlsledger` binary against real corpora, real
//! MTAs (the Postfix lab) and hostile input. One binary keeps link time down on two cores.

mod bad_input;
mod cli;
mod clickhouse;
mod common;
mod corpus;
mod feeds;
mod ingest;
mod journald;
mod milter;
mod opensmtpd;
mod postfix_lab;
mod reputation;
mod rspamd;
mod serve;
mod tidy;
mod whyscream;
