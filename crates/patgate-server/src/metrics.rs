//! Prometheus metrics: decisions by result and reason, and their latency.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// Latency bucket bounds, in seconds.
const BUCKETS: [f64; 12] =
    [0.000_005, 0.00001, 0.000_025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05];

/// Counters and a histogram, updated without blocking the decision path for long.
#[derive(Debug, Default)]
pub struct Metrics {
    decisions: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Metrics {
    /// Records one decision from `endpoint` (`decide`, `forward_auth`), its result and
    /// reason, and how long it took.
    pub fn record(&self, endpoint: &'static str, allowed: bool, reason: &'static str, elapsed: Duration) {
        let result = if allowed { "allow" } else { "deny" };
        if let Ok(mut decisions) = self.decisions.lock() {
            *decisions.entry((endpoint, result, reason)).or_default() += 1;
        }
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, tokens: usize, sequence: i64) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP patgate_decisions_total Decisions by endpoint, result and reason.");
        let _ = writeln!(out, "# TYPE patgate_decisions_total counter");
        if let Ok(decisions) = self.decisions.lock() {
            for ((endpoint, result, reason), count) in decisions.iter() {
                let _ = writeln!(
                    out,
                    "patgate_decisions_total{{endpoint=\"{endpoint}\",result=\"{result}\",reason=\"{reason}\"}} {count}"
                );
            }
        }
        let _ = writeln!(out, "# HELP patgate_decision_seconds Time to decide, from request to answer.");
        let _ = writeln!(out, "# TYPE patgate_decision_seconds histogram");
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            let _ =
                writeln!(out, "patgate_decision_seconds_bucket{{le=\"{bound}\"}} {}", bucket.load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "patgate_decision_seconds_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "patgate_decision_seconds_sum {sum}");
        let _ = writeln!(out, "patgate_decision_seconds_count {count}");
        let _ = writeln!(out, "# HELP patgate_tokens Tokens in the index (all states).");
        let _ = writeln!(out, "# TYPE patgate_tokens gauge");
        let _ = writeln!(out, "patgate_tokens {tokens}");
        let _ = writeln!(out, "# HELP patgate_change_sequence Last change applied to this replica's index.");
        let _ = writeln!(out, "# TYPE patgate_change_sequence gauge");
        let _ = writeln!(out, "patgate_change_sequence {sequence}");
        out
    }
}
