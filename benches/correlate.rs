//! Criterion bench of parse + correlate over the real lab logs, reported as bytes per second:
//! the per-line cost of `tlsledger parse` without reading and JSON printing.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tlsledger::clock::{LogClock, Zone};
use tlsledger::correlate::{Config, Correlator, LineMeta};
use tlsledger::observation::Source;

fn correlate(c: &mut Criterion) {
    let files: [(&str, &str); 2] = [
        ("postfix-out.maillog", include_str!("../examples/postfix-out.maillog")),
        ("postfix-in.maillog", include_str!("../examples/postfix-in.maillog")),
    ];
    let mut group = c.benchmark_group("correlate");
    for (name, text) in files {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::new("parse+correlate", name), text, |b, text| {
            b.iter(|| {
                let mut correlator = Correlator::new(Config::default());
                let source =
                    correlator.add_source(Source { kind: "file".into(), name: name.into(), trust: "local".into() });
                let mut years = parsers::YearInference::new(2026, 11);
                let mut clock = LogClock::new(Zone::Utc);
                let mut out = Vec::new();
                let mut offset = 0;
                for line in text.lines() {
                    if let Ok(record) = parsers::parse_line(line, &mut years) {
                        let ts_micros = record.header.timestamp.as_ref().map_or(0, |t| clock.micros(t));
                        correlator.push(&record, LineMeta { source, offset, ts_micros }, &mut out);
                    }
                    offset += line.len() as u64 + 1;
                }
                correlator.finish(&mut out);
                out.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, correlate);
criterion_main!(benches);
