//! `GET /metrics`: what the server does, in the Prometheus text format (`prometheus-client`).
//!
//! Pipeline, stage and environment names come from configs that pull requests write: each label
//! takes at most [`MAX_VALUES`] distinct values, the rest count under `other`, so that a hostile
//! config cannot grow the server's memory without end.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Distinct values one label takes before the rest count as `other`.
pub const MAX_VALUES: usize = 100;

type Labels = Vec<(&'static str, String)>;
type StaticLabels = Vec<(&'static str, &'static str)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    deliveries: Family<StaticLabels, Counter>,
    runs: Family<Labels, Counter>,
    stages: Histograms,
    lock_waits: Histograms,
    deployments: Family<Labels, Counter>,
    queued: Gauge,
    running: Gauge,
    connections: Gauge,
    seen: Mutex<HashSet<(&'static str, String)>>,
}

fn seconds() -> Histogram {
    // 10 ms to about 3 hours.
    Histogram::new(exponential_buckets(0.01, 2.0, 21))
}

/// A label value in the text format's escaping: backslash, double quote and line feed.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("gitops");
        let deliveries = Family::<StaticLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by provider and outcome (accepted, duplicate, bad_signature, ...)",
            deliveries.clone(),
        );
        let runs = Family::<Labels, Counter>::default();
        registry.register("runs", "Runs ended, by pipeline and result", runs.clone());
        let stages = Histograms::new_with_constructor(seconds as fn() -> Histogram);
        registry.register(
            "stage_duration_seconds",
            "How long stages ran, by pipeline and result",
            stages.clone(),
        );
        let lock_waits = Histograms::new_with_constructor(seconds as fn() -> Histogram);
        registry.register(
            "environment_lock_wait_seconds",
            "How long deployments waited for an environment's lock",
            lock_waits.clone(),
        );
        let deployments = Family::<Labels, Counter>::default();
        registry.register(
            "deployments",
            "Deployments and stops, by environment, action and result",
            deployments.clone(),
        );
        let queued = Gauge::default();
        registry.register(
            "inbox_queued",
            "Deliveries accepted and waiting to run",
            queued.clone(),
        );
        let running = Gauge::default();
        registry.register(
            "inbox_running",
            "Deliveries whose runs are running",
            running.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "http_connections",
            "Open HTTP connections",
            connections.clone(),
        );
        Metrics {
            registry,
            deliveries,
            runs,
            stages,
            lock_waits,
            deployments,
            queued,
            running,
            connections,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// `value` as a label value of `label` (escaped: `prometheus-client` writes label values as
    /// they are), or `other` past [`MAX_VALUES`] distinct ones.
    fn bounded(&self, label: &'static str, value: &str) -> String {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let key = (label, escape(value));
        if seen.contains(&key) {
            return key.1;
        }
        if seen.iter().filter(|(l, _)| *l == label).count() >= MAX_VALUES {
            return "other".to_owned();
        }
        seen.insert(key.clone());
        key.1
    }

    pub fn delivery(&self, provider: &'static str, outcome: &'static str) {
        self.deliveries
            .get_or_create(&vec![("provider", provider), ("outcome", outcome)])
            .inc();
    }

    pub fn run(&self, pipeline: &str, result: &str) {
        let pipeline = self.bounded("pipeline", pipeline);
        self.runs
            .get_or_create(&vec![("pipeline", pipeline), ("result", result.to_owned())])
            .inc();
    }

    pub fn stage(&self, pipeline: &str, result: &str, secs: f64) {
        let pipeline = self.bounded("pipeline", pipeline);
        self.stages
            .get_or_create(&vec![("pipeline", pipeline), ("result", result.to_owned())])
            .observe(secs);
    }

    pub fn lock_wait(&self, environment: &str, secs: f64) {
        let environment = self.bounded("environment", environment);
        self.lock_waits
            .get_or_create(&vec![("environment", environment)])
            .observe(secs);
    }

    pub fn deployment(&self, environment: &str, action: &str, result: &str) {
        let environment = self.bounded("environment", environment);
        self.deployments
            .get_or_create(&vec![
                ("environment", environment),
                ("action", action.to_owned()),
                ("result", result.to_owned()),
            ])
            .inc();
    }

    pub fn connections(&self) -> &Gauge {
        &self.connections
    }

    /// The text exposition, with the inbox's depth as it is now.
    pub fn render(&self, queued: u64, running: u64) -> String {
        self.queued.set(i64::try_from(queued).unwrap_or(i64::MAX));
        self.running.set(i64::try_from(running).unwrap_or(i64::MAX));
        let mut out = String::new();
        // Writing to a String does not fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_name_stays_inside_its_label() {
        let m = Metrics::new();
        m.run("x\"} 1\ngitops_runs_total{pipeline=\"forged\\", "success");
        let text = m.render(0, 0);
        let runs: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("gitops_runs_total"))
            .collect();
        assert_eq!(
            runs,
            [
                r#"gitops_runs_total{pipeline="x\"} 1\ngitops_runs_total{pipeline=\"forged\\",result="success"} 1"#
            ],
            "{text}"
        );
    }

    #[test]
    fn a_label_takes_a_bounded_number_of_values() {
        let m = Metrics::new();
        for i in 0..MAX_VALUES + 50 {
            m.run(&format!("p{i}"), "success");
        }
        let text = m.render(0, 0);
        assert_eq!(text.matches("gitops_runs_total{").count(), MAX_VALUES + 1);
        assert!(text.contains("gitops_runs_total{pipeline=\"other\",result=\"success\"} 50"));
        // Known values keep counting under their own name.
        m.run("p0", "success");
        assert!(
            m.render(0, 0)
                .contains("gitops_runs_total{pipeline=\"p0\",result=\"success\"} 2")
        );
    }
}
