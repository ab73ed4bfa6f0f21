//! Scheduler throughput on no-op stages, ours against the hand-written `minimal` scheduler and
//! the `spawn_join` floor, in every shape at N = 1,000 and 10,000 (`compare` runs all of them,
//! up to 100,000 and with dagx and dagrs, each in its own process). Its iterations follow one
//! another without `compare`'s pause (`gitops_benches::settle`), which would make each cost a
//! quarter of a second: `minimal`'s `chain` reads slower here than in `compare` (see
//! benches/README.md, "a pause before every run").

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use gitops_benches::impls::{prepare, run_on};
use gitops_benches::runtime;
use gitops_benches::shapes::Shape;

fn scheduler(c: &mut Criterion) {
    let rt = runtime();
    for shape in Shape::ALL {
        for n in [1_000usize, 10_000] {
            let needs = shape.needs(n);
            let mut g = c.benchmark_group(format!("scheduler/{}/{n}", shape.name()));
            g.throughput(Throughput::Elements(n as u64));
            g.sample_size(10);
            for imp in ["gitops", "minimal", "spawn_join"] {
                g.bench_function(imp, |b| {
                    b.iter_batched(
                        || {
                            rt.block_on(prepare(imp, &needs))
                                .unwrap_or_else(|| panic!("no impl {imp}"))
                        },
                        |run| run_on(&rt, run),
                        BatchSize::PerIteration,
                    )
                });
            }
            g.finish();
        }
    }
}

criterion_group!(benches, scheduler);
criterion_main!(benches);
