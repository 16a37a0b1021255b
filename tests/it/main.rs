//! The single integration-test binary: the real `tlsledger` binary against real corpora, real
//! MTAs (the Postfix lab) and hostile input. One binary keeps link time down on two cores.

mod bad_input;
mod cli;
mod clickhouse;
mod cluster;
mod common;
mod corpus;
mod exim;
mod feeds;
mod ingest;
mod journald;
mod lab;
mod milter;
mod milter_postfix;
mod milter_sendmail;
mod opensmtpd;
mod postfix_lab;
mod report;
mod reputation;
mod rspamd;
mod sendmail;
mod serve;
mod tidy;
mod whyscream;
