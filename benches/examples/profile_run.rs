//! Runs one planned pipeline many times on our scheduler, for profilers:
//! `perf record target/release/examples/profile_run layered 100000 10`.

use gitops_benches::impls::gitops_pipeline;
use gitops_benches::shapes::Shape;
use std::sync::Arc;
fn main() {
    let shape = Shape::from_name(&std::env::args().nth(1).unwrap()).unwrap();
    let n: usize = std::env::args().nth(2).unwrap().parse().unwrap();
    let loops: usize = std::env::args().nth(3).unwrap().parse().unwrap();
    let pipeline = Arc::new(gitops_pipeline(&shape.needs(n)));
    let rt = gitops_benches::runtime();
    let t = std::time::Instant::now();
    for _ in 0..loops {
        let p = pipeline.clone();
        rt.block_on(async move {
            tokio::spawn(gitops_benches::impls::run_gitops_once(p))
                .await
                .unwrap()
        });
    }
    eprintln!(
        "{:.2} us/stage",
        t.elapsed().as_secs_f64() * 1e6 / (n * loops) as f64
    );
}
