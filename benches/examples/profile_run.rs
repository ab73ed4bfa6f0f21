//! Runs one implementation's scheduler on one shape many times, for profilers:
//! `perf record target/release/examples/profile_run gitops layered 100000 10`. Each run is
//! prepared before it (for gitops: its pipeline planned) outside the clock: only runs are timed.

use gitops_benches::shapes::Shape;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name, shape, n, loops] = args.as_slice() else {
        eprintln!(
            "usage: profile_run IMPL SHAPE N LOOPS (IMPL: gitops, minimal, minimal_config, spawn_join, dagx, dagrs)"
        );
        std::process::exit(2);
    };
    let Some(shape) = Shape::from_name(shape) else {
        eprintln!("unknown shape {shape}");
        std::process::exit(2);
    };
    let (Ok(n), Ok(loops)) = (n.parse::<usize>(), loops.parse::<usize>()) else {
        eprintln!("N and LOOPS are numbers");
        std::process::exit(2);
    };
    let needs = shape.needs(n);
    let rt = gitops_benches::runtime();
    let mut timed = std::time::Duration::ZERO;
    for _ in 0..loops {
        let Some(run) = rt.block_on(gitops_benches::impls::prepare(name, &needs)) else {
            eprintln!("unknown implementation {name}");
            std::process::exit(2);
        };
        gitops_benches::settle();
        let t = std::time::Instant::now();
        let leftover = gitops_benches::impls::run_on(&rt, run);
        timed += t.elapsed();
        drop(leftover);
    }
    eprintln!(
        "{:.2} us/stage",
        timed.as_secs_f64() * 1e6 / (n * loops) as f64
    );
}
