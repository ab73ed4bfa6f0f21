//! What keeping a stage's log line costs: a line written to its stage's file in the state dir
//! (`gitops_core::logs`), against the baseline of formatting the same line and dropping it.

use criterion::{Criterion, criterion_group, criterion_main};
use gitops_core::backend::{LogLine, LogStream};
use gitops_core::logs::LogStore;
use gitops_core::scheduler::LogRecorder;

fn line() -> LogLine {
    LogLine {
        stage: "build".to_owned(),
        attempt: 1,
        stream: LogStream::Stdout,
        line: "   Compiling gitops-core v0.1.0 (/work/gitops-core): a typical line of 80 bytes"
            .to_owned(),
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // No cap within the bench: every line is written.
    let store = LogStore::new(dir.path()).with_max_bytes(u64::MAX);
    let writer = store.writer("bench").expect("a run id");
    let line = line();
    let mut group = c.benchmark_group("stage_log_line");
    group.bench_function("baseline: encode only", |b| {
        b.iter(|| std::hint::black_box(serde_json::to_vec(&line.line).map(|v| v.len())))
    });
    group.bench_function("kept: encode and write to the stage's file", |b| {
        b.iter(|| writer.line(std::hint::black_box(&line)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
