//! Where the memory of a run of N stages goes: resident size after each step, for one shape:
//! `target/release/examples/memory_probe chain 100000`.

use std::sync::Arc;

use gitops_benches::shapes::Shape;

fn rss_mb() -> f64 {
    gitops_benches::rss_mb().unwrap_or(0.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [shape, n] = args.as_slice() else {
        eprintln!("usage: memory_probe SHAPE N");
        std::process::exit(2);
    };
    let (Some(shape), Ok(n)) = (Shape::from_name(shape), n.parse::<usize>()) else {
        eprintln!("unknown shape or bad N");
        std::process::exit(2);
    };
    let rt = gitops_benches::runtime();
    let start = rss_mb();
    let needs = shape.needs(n);
    let after_needs = rss_mb();
    let config = gitops_benches::impls::gitops_config(&needs);
    let after_config = rss_mb();
    let plan = Arc::new(gitops_benches::impls::gitops_plan(&config));
    let after_plan = rss_mb();
    drop(config);
    let after_drop = rss_mb();
    let run = gitops_benches::impls::prepare_planned(plan.clone());
    let leftover = gitops_benches::impls::run_on(&rt, run);
    let after_run = rss_mb();
    drop(leftover);
    println!(
        "start {start:.0} MB; needs +{:.1}; config +{:.1}; plan +{:.1}; config dropped {:+.1}; run +{:.1} (peak {:.0} MB)",
        after_needs - start,
        after_config - after_needs,
        after_plan - after_config,
        after_drop - after_plan,
        after_run - after_drop,
        gitops_benches::peak_rss_mb().unwrap_or(0.0)
    );
}
