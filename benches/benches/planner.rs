//! Planner throughput: events planned against configs of 10, 100 and 1,000 pipelines with
//! branch, tag-semver and path filters; graph construction of a 10,000-stage pipeline.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gitops_benches::impls::gitops_pipeline;
use gitops_benches::planner_bench;
use gitops_benches::shapes::Shape;
use gitops_core::plan::Planner;
use std::hint::black_box;

fn planner(c: &mut Criterion) {
    let events = planner_bench::events();
    let mut g = c.benchmark_group("planner");
    g.throughput(Throughput::Elements(events.len() as u64));
    for n in [10, 100, 1000] {
        let config = planner_bench::config(n);
        let planner = Planner::new();
        g.bench_function(format!("{n}_pipelines"), |b| {
            b.iter(|| {
                for (e, ch) in &events {
                    black_box(planner.plan(e, &config, ch).ok());
                }
            })
        });
    }
    g.finish();
    let needs = Shape::Layered.needs(10_000);
    let mut g = c.benchmark_group("graph_construction");
    g.sample_size(10);
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("layered_10000", |b| {
        b.iter(|| black_box(gitops_pipeline(&needs)))
    });
    g.finish();
}

criterion_group!(benches, planner);
criterion_main!(benches);
