//! `compare`: every comparison of the benchmarks, each cell in a process of its own so that its
//! peak RSS is its own. The cells compared with each other take turns, for three rounds (one
//! with `--quick`, N with `--rounds N`), and each reports its median round. Prints a table, or
//! with `--json` one JSON object per line.
//!
//! ```text
//! cargo run --release -p gitops-benches --bin compare -- [--quick] [--rounds N] [--json] [--only BENCH]
//! ```

use std::process::{Command, ExitCode};
use std::time::Instant;

use gitops_benches::impls::{IMPLS, gitops_pipeline, prepare, run_on};
use gitops_benches::shapes::Shape;
use gitops_benches::{
    peak_rss_mb, planner_bench, reset_peak_rss, rss_mb, runtime, settle, webhook_fixtures,
};
use gitops_core::graph::StageGraph;
use gitops_core::plan::Planner;
use serde_json::{Value, json};

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];

/// The watcher's cells: a poll after 100 refs moved, a poll after nothing changed, and
/// `git for-each-ref` after 100 moved.
const WATCHER_IMPLS: [&str; 3] = [
    "gitops_watcher",
    "gitops_watcher_unchanged",
    "git_for_each_ref",
];
const WATCHER_SIZES: [usize; 2] = [10_000, 100_000];

/// The webhook cells' shapes: every fixture, then each forge's fixtures alone.
const WEBHOOK_SHAPES: [&str; 5] = ["fixtures", "github", "gitlab", "bitbucket", "gitea"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(pos) = args.iter().position(|a| a == "--cell") {
        let cell: Vec<&str> = args[pos + 1..]
            .iter()
            .map(String::as_str)
            .filter(|a| !a.starts_with("--"))
            .collect();
        let reps = if args.iter().any(|a| a == "--quick") {
            Reps::Quick
        } else {
            Reps::Full
        };
        return match run_cell(&cell, reps) {
            Some(v) => {
                println!("{v}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("compare: unknown cell {cell:?}");
                ExitCode::FAILURE
            }
        };
    }
    let quick = args.iter().any(|a| a == "--quick");
    let json_out = args.iter().any(|a| a == "--json");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let rounds: usize = match args.iter().position(|a| a == "--rounds") {
        Some(i) => match args.get(i + 1).and_then(|r| r.parse().ok()) {
            Some(r) if r > 0 => r,
            _ => {
                eprintln!("compare: --rounds takes a number of rounds (1 or more)");
                return ExitCode::FAILURE;
            }
        },
        None if quick => 1,
        None => 3,
    };
    let cell = |bench: &str, imp: &str, shape: &str, n: String| -> Vec<String> {
        vec![bench.into(), imp.into(), shape.into(), n]
    };
    // Cells compared with each other form a group; a group's cells take turns, round after
    // round, so that the machine's drift reaches all of them alike.
    let mut groups: Vec<Vec<Vec<String>>> = Vec::new();
    for shape in Shape::ALL {
        for n in SIZES {
            groups.push(
                IMPLS
                    .iter()
                    // dagrs takes 13 to 60 s a run at 100,000 stages: only in full runs.
                    .filter(|imp| !(quick && **imp == "dagrs" && n >= 100_000))
                    .map(|imp| cell("scheduler", imp, shape.name(), n.to_string()))
                    .collect(),
            );
            groups.push(
                ["gitops_plan", "stage_graph"]
                    .iter()
                    .map(|imp| cell("graph", imp, shape.name(), n.to_string()))
                    .collect(),
            );
        }
    }
    for n in [10, 100, 1000] {
        groups.push(vec![cell("planner", "gitops", "mixed", n.to_string())]);
    }
    // Every fixture, then each forge's alone.
    for forge in WEBHOOK_SHAPES {
        groups.push(
            ["gitops", "serde_json_value"]
                .iter()
                .map(|imp| cell("webhook", imp, forge, "0".into()))
                .collect(),
        );
    }
    for shape in gitops_benches::ledger_bench::SHAPES {
        groups.push(
            gitops_benches::ledger_bench::IMPLS
                .iter()
                .map(|imp| {
                    let n = gitops_benches::ledger_bench::STAGES.to_string();
                    cell("ledger", imp, shape, n)
                })
                .collect(),
        );
    }
    for n in WATCHER_SIZES {
        groups.push(
            WATCHER_IMPLS
                .iter()
                .map(|imp| cell("watcher", imp, "refs", n.to_string()))
                .collect(),
        );
    }
    // Event → first stage started: each cell's events are its samples (p50 and p99 of them),
    // one round. `--quick` leaves out the 50,000-file repository (minutes a cell).
    for n in gitops_benches::checkout_bench::SIZES
        .into_iter()
        .filter(|&n| !(quick && n >= 50_000))
    {
        groups.push(
            gitops_benches::checkout_bench::IMPLS
                .iter()
                .map(|imp| cell("checkout", imp, "files", n.to_string()))
                .collect(),
        );
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("compare: {e}"));
    let mut rows: Vec<Value> = Vec::new();
    let mut failed = false;
    for group in groups
        .iter()
        .filter(|g| only.as_ref().is_none_or(|o| *o == g[0][0]))
    {
        let mut results: Vec<Vec<Value>> = vec![Vec::new(); group.len()];
        let rounds = if group[0][0] == "checkout" { 1 } else { rounds };
        for _ in 0..rounds {
            for (cell, results) in group.iter().zip(results.iter_mut()) {
                match run_cell_process(&exe, cell, quick) {
                    Ok(v) => {
                        if !json_out {
                            eprint!(".");
                        }
                        results.push(v);
                    }
                    Err(e) => {
                        failed = true;
                        eprintln!("\ncompare: cell {cell:?} failed: {e}");
                    }
                }
            }
        }
        for r in results.into_iter().filter(|r| !r.is_empty()) {
            let v = merge_rounds(r);
            if json_out {
                println!("{v}");
            }
            rows.push(v);
        }
    }
    if !json_out {
        eprintln!();
        print_table(&rows);
        if quick {
            println!(
                "\n(--quick: one round, dagrs not run at 100,000 stages, checkout not at 50,000 files)"
            );
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs `cell` in a process of its own: its result line.
fn run_cell_process(exe: &std::path::Path, cell: &[String], quick: bool) -> Result<Value, String> {
    let out = Command::new(exe)
        .arg("--cell")
        .args(cell)
        .args(quick.then_some("--quick"))
        .output()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let line = String::from_utf8_lossy(&out.stdout);
    match serde_json::from_str::<Value>(line.trim()) {
        Ok(v) if out.status.success() => Ok(v),
        _ => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
    }
}

/// One cell's rounds as one row: the round with the median time, and the highest peak RSS and
/// run growth.
fn merge_rounds(mut rounds: Vec<Value>) -> Value {
    let highest = |key: &str| {
        rounds
            .iter()
            .filter_map(|r| r[key].as_f64())
            .fold(None, |m: Option<f64>, p| Some(m.map_or(p, |m| m.max(p))))
    };
    let (peak, run_mb) = (highest("peak_rss_mb"), highest("run_mb"));
    rounds.sort_by(|a, b| {
        let t = |v: &Value| v["median_us"].as_f64().unwrap_or(f64::INFINITY);
        t(a).total_cmp(&t(b))
    });
    let mut row = rounds.swap_remove(rounds.len() / 2);
    row["rounds"] = json!(rounds.len() + 1);
    if let Some(peak) = peak {
        row["peak_rss_mb"] = json!(peak);
    }
    if let Some(run_mb) = run_mb {
        row["run_mb"] = json!(run_mb);
    }
    row
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// How many timed runs a cell process makes (the rounds add more).
#[derive(Clone, Copy)]
enum Reps {
    /// Three below 100,000 stages, one at 100,000.
    Full,
    /// One (`--quick`).
    Quick,
}

impl Reps {
    fn of(self, n: usize) -> usize {
        match self {
            Reps::Full if n < 100_000 => 3,
            _ => 1,
        }
    }
}

fn run_cell(cell: &[&str], reps: Reps) -> Option<Value> {
    let [bench, imp, shape, n] = cell else {
        return None;
    };
    let n: usize = n.parse().ok()?;
    // The scheduler's runs reset the peak to measure their own growth: the process's peak is
    // then the highest seen before each reset and at the end.
    let mut peak = 0.0f64;
    let mut run_mb: Option<f64> = None;
    let times: Vec<f64> = match *bench {
        "scheduler" => {
            let needs = Shape::from_name(shape)?.needs(n);
            let rt = runtime();
            let mut times = Vec::new();
            for _ in 0..reps.of(n) {
                let run = rt.block_on(prepare(imp, &needs))?;
                // What the run itself adds: its peak above the resident size before it, with
                // its graph (for gitops, the plan) already built.
                peak = peak.max(peak_rss_mb().unwrap_or(0.0));
                settle();
                let before = reset_peak_rss().then(rss_mb).flatten();
                let start = Instant::now();
                let leftover = run_on(&rt, run);
                times.push(start.elapsed().as_secs_f64() * 1e6);
                if let (Some(before), Some(after)) = (before, peak_rss_mb()) {
                    run_mb = Some(run_mb.unwrap_or(0.0).max(after - before));
                }
                drop(leftover);
            }
            times
        }
        "graph" => {
            let needs = Shape::from_name(shape)?.needs(n);
            let names: Vec<(String, Vec<String>)> = needs
                .iter()
                .enumerate()
                .map(|(i, ns)| {
                    (
                        format!("s{i}"),
                        ns.iter().map(|d| format!("s{d}")).collect(),
                    )
                })
                .collect();
            (0..reps.of(n))
                .map(|_| {
                    let start = Instant::now();
                    match *imp {
                        "gitops_plan" => drop(std::hint::black_box(gitops_pipeline(&needs))),
                        "stage_graph" => drop(std::hint::black_box(StageGraph::from_needs(
                            names.iter().map(|(s, n)| (s, n)),
                        ))),
                        _ => return None,
                    }
                    Some(start.elapsed().as_secs_f64() * 1e6)
                })
                .collect::<Option<Vec<_>>>()?
        }
        "watcher" => {
            let repo = gitops_benches::watcher_bench::Repo::new(n);
            let unchanged = *imp == "gitops_watcher_unchanged";
            if unchanged {
                repo.settle();
            }
            let rounds = 3;
            (0..rounds)
                .map(|round| {
                    // Untimed: a hundred refs move, as between two polls of a busy repository.
                    if !unchanged {
                        repo.move_refs(round, 100);
                    }
                    let start = Instant::now();
                    match *imp {
                        "gitops_watcher" => {
                            repo.poll();
                        }
                        "gitops_watcher_unchanged" => {
                            assert!(
                                !repo.poll(),
                                "compare: a poll of unchanged refs listed them"
                            );
                        }
                        "git_for_each_ref" => repo.for_each_ref(),
                        _ => return None,
                    }
                    Some(start.elapsed().as_secs_f64() * 1e6)
                })
                .collect::<Option<Vec<_>>>()?
        }
        "planner" => {
            let config = planner_bench::config(n);
            let events = planner_bench::events();
            let rounds = 200;
            // One planner for the config, as an application planning its events keeps one.
            let planner = Planner::new();
            (0..5)
                .map(|_| {
                    let start = Instant::now();
                    for _ in 0..rounds {
                        for (e, c) in &events {
                            std::hint::black_box(planner.plan(e, &config, c).ok());
                        }
                    }
                    start.elapsed().as_secs_f64() * 1e6 / (rounds * events.len()) as f64
                })
                .collect()
        }
        "ledger" => {
            use gitops_benches::ledger_bench::{EngineBench, execute, scheduler_only};
            let needs = Shape::from_name(shape)?.needs(n);
            let rt = runtime();
            let engine = (*imp == "engine_ledger")
                .then(|| EngineBench::new(&gitops_benches::ledger_bench::config_yaml(&needs)));
            let mut times = Vec::new();
            for _ in 0..reps.of(n) {
                settle();
                match (&engine, *imp) {
                    (Some(engine), _) => {
                        let run = engine.start();
                        let id = run.id.clone();
                        let start = Instant::now();
                        rt.block_on(async move { tokio::spawn(execute(run, n)).await })
                            .unwrap_or_else(|e| panic!("the run failed: {e}"));
                        times.push(start.elapsed().as_secs_f64() * 1e6);
                        assert_eq!(engine.recorded(&id), n, "every stage in the ledger");
                    }
                    (None, "scheduler_only") => {
                        let run = scheduler_only(&needs);
                        let start = Instant::now();
                        let leftover = run_on(&rt, run);
                        times.push(start.elapsed().as_secs_f64() * 1e6);
                        drop(leftover);
                    }
                    _ => return None,
                }
            }
            times
        }
        "checkout" => {
            use gitops_benches::checkout_bench::{measure, percentile};
            let events = match reps {
                Reps::Full => 30,
                Reps::Quick if n >= 10_000 => 5,
                Reps::Quick => 10,
            };
            let times = measure(imp, n, events)?;
            return Some(json!({"bench": bench, "shape": shape, "n": n, "impl": imp,
                "median_us": percentile(&times, 50.0), "p99_us": percentile(&times, 99.0),
                "events": times.len(), "per_stage_us": null, "peak_rss_mb": peak_rss_mb()}));
        }
        "webhook" => {
            let fixtures: Vec<_> = webhook_fixtures()
                .into_iter()
                .filter(|(p, _, _)| *shape == "fixtures" || *shape == p.as_str())
                .collect();
            let bytes: usize = fixtures.iter().map(|f| f.2.len()).sum();
            let rounds = 200;
            let times: Vec<f64> = (0..5)
                .map(|_| {
                    let start = Instant::now();
                    for _ in 0..rounds {
                        for (p, t, body) in &fixtures {
                            match *imp {
                                "gitops" => drop(std::hint::black_box(
                                    gitops_core::source::webhook::parse_all(*p, t, body).ok(),
                                )),
                                _ => drop(std::hint::black_box(
                                    serde_json::from_slice::<Value>(body).ok(),
                                )),
                            }
                        }
                    }
                    start.elapsed().as_secs_f64() * 1e6 / rounds as f64
                })
                .collect();
            let med = median(times);
            return Some(
                json!({"bench": bench, "shape": shape, "n": bytes, "impl": imp, "median_us": med,
                "per_stage_us": null, "mb_per_s": bytes as f64 / med, "peak_rss_mb": peak_rss_mb()}),
            );
        }
        _ => return None,
    };
    let med = median(times);
    let per = match *bench {
        "planner" | "watcher" => med,
        _ => med / n as f64,
    };
    let peak = peak_rss_mb().map(|p| p.max(peak));
    let mut v = json!({"bench": bench, "shape": shape, "n": n, "impl": imp, "median_us": med, "per_stage_us": per, "peak_rss_mb": peak});
    if *bench == "scheduler" {
        v["run_mb"] = json!(run_mb);
    }
    if *bench == "planner" {
        v["events_per_s"] = json!(1e6 / med);
    }
    Some(v)
}

/// One line of a scheduler table: the shape and N, a column per implementation, the ratios.
fn scheduler_line(shape: &str, n: &str, cell: impl Fn(&str) -> String, ratios: &[String]) {
    let mut line = format!("{shape:<8} {n:>7} ");
    for imp in IMPLS {
        line += &format!(" {:>w$}", cell(imp), w = imp.len().max(8));
    }
    line.push(' ');
    for r in ratios {
        line += &format!(" {r:>9}");
    }
    println!("{line}");
}

fn print_table(rows: &[Value]) {
    let get = |b: &str, s: &str, n: u64, i: &str| {
        rows.iter()
            .find(|r| r["bench"] == b && r["shape"] == s && r["n"] == n && r["impl"] == i)
            .cloned()
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".to_owned(),
    };
    let scheduler_rows = || {
        Shape::ALL.into_iter().flat_map(|shape| {
            SIZES.into_iter().filter_map(move |n| {
                let cell = move |i: &str| get("scheduler", shape.name(), n as u64, i);
                cell("gitops").map(|_| (shape, n, cell))
            })
        })
    };
    let header = |ratios: &[&str]| {
        let ratios: Vec<String> = ratios.iter().map(|r| r.to_string()).collect();
        scheduler_line("shape", "n", |imp| imp.to_owned(), &ratios);
    };
    println!("Scheduler: µs per stage, no-op stages, 2 worker threads");
    header(&["÷minimal", "dagrs÷", "dagx÷"]);
    for (shape, n, cell) in scheduler_rows() {
        let per = |i: &str| cell(i).and_then(|r| r["per_stage_us"].as_f64());
        let ratios = [
            ratio(per("gitops"), per("minimal")),
            ratio(per("dagrs"), per("gitops")),
            ratio(per("dagx"), per("gitops")),
        ];
        scheduler_line(
            shape.name(),
            &n.to_string(),
            |i| per(i).map_or("-".to_owned(), |p| format!("{p:.2}")),
            &ratios,
        );
    }
    println!(
        "\nScheduler memory: peak RSS MiB of the cell's process / what the run adds, MiB (minimal_config: minimal given the same config as gitops)"
    );
    header(&["÷minimal", "÷min_cfg"]);
    for (shape, n, cell) in scheduler_rows() {
        let peak = |i: &str| cell(i).and_then(|r| r["peak_rss_mb"].as_f64());
        let ratios = [
            ratio(peak("gitops"), peak("minimal")),
            ratio(peak("gitops"), peak("minimal_config")),
        ];
        let fmt = |i: &str| {
            cell(i).map_or("-".to_owned(), |r| {
                let run = r["run_mb"]
                    .as_f64()
                    .map_or("-".to_owned(), |m| format!("{m:.0}"));
                format!("{:.0}/{run}", r["peak_rss_mb"].as_f64().unwrap_or(0.0))
            })
        };
        scheduler_line(shape.name(), &n.to_string(), fmt, &ratios);
    }
    println!(
        "\nGraph construction: µs per stage (config built in code → plan with its petgraph DAG; the DAG alone)"
    );
    for shape in Shape::ALL {
        for n in SIZES {
            let per = |i: &str| {
                get("graph", shape.name(), n as u64, i).and_then(|r| r["per_stage_us"].as_f64())
            };
            if let (Some(a), Some(b)) = (per("gitops_plan"), per("stage_graph")) {
                println!(
                    "{:<8} {:>7}  plan {a:>8.2}  graph {b:>8.2}",
                    shape.name(),
                    n
                );
            }
        }
    }
    println!("\nPlanner: events planned per second");
    for r in rows.iter().filter(|r| r["bench"] == "planner") {
        println!(
            "{:>5} pipelines  {:>12.0} events/s  ({:.2} µs an event)",
            r["n"],
            r["events_per_s"].as_f64().unwrap_or(0.0),
            r["median_us"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "\nRepository watcher: one poll (100 refs moved, or nothing changed) vs git for-each-ref, ms"
    );
    println!(
        "{:>7} {:>14} {:>24} {:>16} {:>12} {:>14}",
        "refs", WATCHER_IMPLS[0], WATCHER_IMPLS[1], WATCHER_IMPLS[2], "git÷moved", "git÷unchanged"
    );
    for n in WATCHER_SIZES {
        let us = |i: &str| {
            rows.iter()
                .find(|r| r["bench"] == "watcher" && r["n"] == n as u64 && r["impl"] == i)
                .and_then(|r| r["median_us"].as_f64())
        };
        let [moved, unchanged, git] = WATCHER_IMPLS.map(us);
        if moved.or(unchanged).or(git).is_none() {
            continue;
        }
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |us| format!("{:.3}", us / 1000.0));
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("{:.1}x", a / b),
            _ => "-".to_owned(),
        };
        println!(
            "{n:>7} {:>14} {:>24} {:>16} {:>12} {:>14}",
            ms(moved),
            ms(unchanged),
            ms(git),
            ratio(git, moved),
            ratio(git, unchanged)
        );
    }
    print_ledger_table(rows);
    print_checkout_table(rows);
    println!("\nWebhook parsing: MB/s of the fixture payloads (all, then each forge's)");
    println!(
        "{:<10} {:>10} {:>18} {:>8}",
        "fixtures", "gitops", "serde_json_value", "ratio"
    );
    for forge in WEBHOOK_SHAPES {
        let mb = |i: &str| {
            rows.iter()
                .find(|r| r["bench"] == "webhook" && r["shape"] == forge && r["impl"] == i)
                .and_then(|r| r["mb_per_s"].as_f64())
        };
        if let (Some(ours), Some(value)) = (mb("gitops"), mb("serde_json_value")) {
            println!(
                "{forge:<10} {ours:>10.1} {value:>18.1} {:>7.2}x",
                ours / value
            );
        }
    }
}

/// What the engine (ledger, logs) adds to the scheduler, a stage.
fn print_ledger_table(rows: &[Value]) {
    let get = |shape: &str, i: &str| {
        rows.iter()
            .find(|r| r["bench"] == "ledger" && r["shape"] == shape && r["impl"] == i)
            .and_then(|r| r["per_stage_us"].as_f64())
    };
    let mut printed = false;
    for shape in gitops_benches::ledger_bench::SHAPES {
        let (Some(engine), Some(alone)) =
            (get(shape, "engine_ledger"), get(shape, "scheduler_only"))
        else {
            continue;
        };
        if !printed {
            println!(
                "\nLedger cost: µs a stage, {} no-op stages through Engine vs the scheduler alone",
                gitops_benches::ledger_bench::STAGES
            );
            println!(
                "{:<8} {:>14} {:>15} {:>9}",
                "shape", "engine_ledger", "scheduler_only", "added"
            );
            printed = true;
        }
        println!(
            "{shape:<8} {engine:>14.2} {alone:>15.2} {:>9.2}",
            engine - alone
        );
    }
}

/// Event → first stage started, p50/p99 a cell, and the ratios the targets are about.
fn print_checkout_table(rows: &[Value]) {
    use gitops_benches::checkout_bench::{IMPLS, SIZES};
    let get = |n: usize, i: &str| {
        rows.iter()
            .find(|r| r["bench"] == "checkout" && r["n"] == n as u64 && r["impl"] == i)
            .map(|r| {
                (
                    r["median_us"].as_f64().unwrap_or(0.0) / 1e3,
                    r["p99_us"].as_f64().unwrap_or(0.0) / 1e3,
                    r["events"].as_u64().unwrap_or(0),
                )
            })
    };
    if !SIZES.iter().any(|&n| get(n, "gitops_reuse").is_some()) {
        return;
    }
    println!(
        "\nEvent → first stage started: ms p50/p99 (a pull request event, 100 files changed a commit)"
    );
    let mut head = format!("{:>7} {:>7}", "files", "events");
    for i in IMPLS {
        head += &format!(" {i:>18}");
    }
    println!("{head}  fresh÷worktree reuse÷worktree");
    for n in SIZES {
        if IMPLS.iter().all(|i| get(n, i).is_none()) {
            continue;
        }
        let mut line = format!("{n:>7} {:>7}", get(n, IMPLS[0]).map_or(0, |c| c.2));
        for i in IMPLS {
            let c = get(n, i).map_or("-".to_owned(), |(p50, p99, _)| format!("{p50:.1}/{p99:.1}"));
            line += &format!(" {c:>18}");
        }
        let ratio = |a: &str| match (get(n, a), get(n, "git_worktree")) {
            (Some(a), Some(b)) if b.0 > 0.0 => format!("{:.2}x", a.0 / b.0),
            _ => "-".to_owned(),
        };
        println!(
            "{line}  {:>14} {:>14}",
            ratio("gitops_fresh"),
            ratio("gitops_reuse")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_rounds_keeps_the_median_round_and_the_highest_memory() {
        let round = |us: f64, peak: f64, run: f64| json!({"bench": "scheduler", "median_us": us, "peak_rss_mb": peak, "run_mb": run});
        let row = merge_rounds(vec![
            round(3.0, 10.0, 1.0),
            round(1.0, 30.0, 2.0),
            round(2.0, 20.0, 5.0),
        ]);
        assert_eq!(row["median_us"], json!(2.0));
        assert_eq!(row["peak_rss_mb"], json!(30.0));
        assert_eq!(row["run_mb"], json!(5.0));
        assert_eq!(row["rounds"], json!(3));
    }

    #[test]
    fn a_scheduler_cell_reports_what_its_run_adds_within_its_peak() {
        let row =
            run_cell(&["scheduler", "gitops", "chain", "10000"], Reps::Full).expect("a known cell");
        let run = row["run_mb"].as_f64().expect("run_mb is measured");
        let peak = row["peak_rss_mb"]
            .as_f64()
            .expect("peak_rss_mb is measured");
        // Ten thousand stage reports (128 bytes and an id each) are resident at the run's end,
        // more than the config dropped before it gave back; the plan and the config were not
        // built by the run.
        assert!(
            run > 0.5 && run < peak / 2.0,
            "run {run} MB, peak {peak} MB"
        );
    }
}
