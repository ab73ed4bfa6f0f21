//! Webhook parsing into `GitEvent` against `serde_json::Value` of the same bytes (the baseline:
//! what reading the payload at all costs), and config parsing.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gitops_core::config::Config;
use gitops_core::source::webhook::parse_all;
use std::hint::black_box;

fn webhooks(c: &mut Criterion) {
    let fixtures = gitops_benches::webhook_fixtures();
    assert!(
        !fixtures.is_empty(),
        "no webhook fixtures found in ../shared/fixtures/webhooks"
    );
    let bytes: usize = fixtures.iter().map(|(_, _, b)| b.len()).sum();
    let mut g = c.benchmark_group("webhook_parse");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("gitops", |b| {
        b.iter(|| {
            for (p, t, body) in &fixtures {
                black_box(parse_all(*p, t, body).unwrap());
            }
        })
    });
    g.bench_function("serde_json_value", |b| {
        b.iter(|| {
            for (_, _, body) in &fixtures {
                black_box(serde_json::from_slice::<serde_json::Value>(body).unwrap());
            }
        })
    });
    g.finish();
}

fn config(c: &mut Criterion) {
    let yaml = include_str!("../../gitops-core/tests/data/design.gitops.yml");
    let mut g = c.benchmark_group("config_parse");
    g.throughput(Throughput::Bytes(yaml.len() as u64));
    g.bench_function("gitops", |b| {
        b.iter(|| black_box(Config::parse("f", yaml).unwrap()))
    });
    g.bench_function("serde_yaml_value", |b| {
        b.iter(|| black_box(serde_yaml::from_str::<serde_yaml::Value>(yaml).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, webhooks, config);
criterion_main!(benches);
