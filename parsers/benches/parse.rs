//! Criterion bench of the pure parsers over real corpus lines: syslog envelope alone, and
//! envelope + MTA grammar (Postfix; Exim's own log and Exim through syslog), with and without a
//! `HeaderCache` carried from line to line, reported as bytes per second.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Real Postfix and Exim lines from the lab logs and the public corpora (see
/// tests/data/corpus/SOURCES.md).
fn corpora() -> Vec<(&'static str, Vec<String>)> {
    let files: [(&str, &str); 5] = [
        ("postfix-out.maillog", include_str!("../../examples/postfix-out.maillog")),
        ("postfix-in.maillog", include_str!("../../examples/postfix-in.maillog")),
        ("kumina-postfix_exporter.log", include_str!("../../tests/data/corpus/kumina-postfix_exporter.log")),
        ("exim-testsuite-tls.log", include_str!("../../tests/data/corpus/exim-testsuite-tls.log")),
        ("crowdsec-hub.log", include_str!("../../tests/data/corpus/crowdsec-hub.log")),
    ];
    files
        .into_iter()
        .map(|(name, text)| {
            (name, text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(str::to_owned).collect())
        })
        .collect()
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, lines) in corpora() {
        let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_with_input(BenchmarkId::new("syslog", name), &lines, |b, lines| {
            b.iter(|| lines.iter().filter(|line| parsers::syslog::parse_syslog(line).is_ok()).count())
        });
        // What the `parse` command's workers run: one header cache carried from line to line.
        group.bench_with_input(BenchmarkId::new("record-cached", name), &lines, |b, lines| {
            b.iter(|| {
                let mut cache = parsers::HeaderCache::default();
                lines.iter().filter(|line| parsers::parse_record_cached(line, &mut cache).is_ok()).count()
            })
        });
        group.bench_with_input(BenchmarkId::new("line", name), &lines, |b, lines| {
            b.iter(|| {
                let mut years = parsers::YearInference::new(2026, 11);
                lines.iter().filter(|line| parsers::parse_line(line, &mut years).is_ok()).count()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
