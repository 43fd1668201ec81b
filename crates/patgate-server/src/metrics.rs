//! Prometheus metrics: decisions by result and reason, and their latency. Recording is
//! lock-free: a few relaxed atomic adds per decision.

use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Latency bucket bounds, in seconds.
const BUCKETS: [f64; 12] =
    [0.000_005, 0.00001, 0.000_025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05];

/// The endpoints that decide.
const ENDPOINTS: [&str; 2] = ["decide", "forward_auth"];

/// Every reason a decision can carry (`allowed` for an allow), and forward auth's own
/// refusals; the last slot counts anything unexpected (none: a test checks every reason).
const REASONS: [&str; 21] = [
    "allowed",
    "invalid_token",
    "missing_token",
    "revoked",
    "expired",
    "owner_blocked",
    "ip_not_allowed",
    "lifetime_policy",
    "legacy_disabled",
    "endpoint_not_covered",
    "ambiguous_path",
    "not_found",
    "outside_reach",
    "insufficient_scope",
    "role_too_low",
    "legacy_scope_insufficient",
    "not_applicable",
    "untrusted_proxy",
    "missing_forwarded_request",
    "ambiguous_forwarded_request",
    "other",
];

fn reason_index(reason: &str) -> usize {
    REASONS.iter().position(|known| *known == reason).unwrap_or(REASONS.len() - 1)
}

/// Counters and a histogram.
#[derive(Debug, Default)]
pub struct Metrics {
    decisions: [[AtomicU64; REASONS.len()]; ENDPOINTS.len()],
    // Per bucket (not cumulative), plus one for above the last bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    catch_up_failures: AtomicU64,
    // Since when every attempt to catch up with the change log has failed.
    catch_up_failing_since: std::sync::Mutex<Option<std::time::Instant>>,
    index_rebuilds: AtomicU64,
}

impl Metrics {
    /// Records one decision from `endpoint` (`decide`, `forward_auth`), its reason
    /// (`allowed` for an allow) and how long it took.
    pub fn record(&self, endpoint: &'static str, reason: &'static str, elapsed: Duration) {
        let endpoint = usize::from(endpoint != ENDPOINTS[0]);
        self.decisions[endpoint][reason_index(reason)].fetch_add(1, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS.iter().position(|bound| seconds <= *bound).unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Records an attempt to catch up with the change log.
    pub fn record_catch_up(&self, succeeded: bool) {
        let mut since = self.catch_up_failing_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if succeeded {
            *since = None;
        } else {
            self.catch_up_failures.fetch_add(1, Ordering::Relaxed);
            since.get_or_insert_with(std::time::Instant::now);
        }
    }

    /// How long every attempt to catch up has failed, if the last one did.
    pub fn catch_up_failing_for(&self) -> Option<Duration> {
        let since = self.catch_up_failing_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        since.map(|since| since.elapsed())
    }

    /// Records that the index was rebuilt from a snapshot (a change did not apply).
    pub fn record_rebuild(&self) {
        self.index_rebuilds.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, tokens: usize, sequence: i64) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP patgate_decisions_total Decisions by endpoint, result and reason.");
        let _ = writeln!(out, "# TYPE patgate_decisions_total counter");
        for (endpoint, counters) in ENDPOINTS.iter().zip(&self.decisions) {
            for (reason, counter) in REASONS.iter().zip(counters) {
                let count = counter.load(Ordering::Relaxed);
                if count > 0 {
                    let result = if *reason == "allowed" { "allow" } else { "deny" };
                    let _ = writeln!(
                        out,
                        "patgate_decisions_total{{endpoint=\"{endpoint}\",result=\"{result}\",reason=\"{reason}\"}} {count}"
                    );
                }
            }
        }
        let _ = writeln!(out, "# HELP patgate_decision_seconds Time to decide, from request to answer.");
        let _ = writeln!(out, "# TYPE patgate_decision_seconds histogram");
        let mut cumulative = 0;
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "patgate_decision_seconds_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "patgate_decision_seconds_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "patgate_decision_seconds_sum {sum}");
        let _ = writeln!(out, "patgate_decision_seconds_count {cumulative}");
        let _ = writeln!(out, "# HELP patgate_tokens Tokens in the index (all states).");
        let _ = writeln!(out, "# TYPE patgate_tokens gauge");
        let _ = writeln!(out, "patgate_tokens {tokens}");
        let _ = writeln!(out, "# HELP patgate_change_sequence Last change applied to this replica's index.");
        let _ = writeln!(out, "# TYPE patgate_change_sequence gauge");
        let _ = writeln!(out, "patgate_change_sequence {sequence}");
        let _ = writeln!(
            out,
            "# HELP patgate_catch_up_failing Whether the last attempt to catch up with the change log failed."
        );
        let _ = writeln!(out, "# TYPE patgate_catch_up_failing gauge");
        let _ = writeln!(out, "patgate_catch_up_failing {}", u8::from(self.catch_up_failing_for().is_some()));
        let _ = writeln!(
            out,
            "# HELP patgate_catch_up_failures_total Attempts to catch up with the change log that failed."
        );
        let _ = writeln!(out, "# TYPE patgate_catch_up_failures_total counter");
        let _ = writeln!(out, "patgate_catch_up_failures_total {}", self.catch_up_failures.load(Ordering::Relaxed));
        let _ = writeln!(
            out,
            "# HELP patgate_index_rebuilds_total Times the index was rebuilt from a snapshot because a change did not apply."
        );
        let _ = writeln!(out, "# TYPE patgate_index_rebuilds_total counter");
        let _ = writeln!(out, "patgate_index_rebuilds_total {}", self.index_rebuilds.load(Ordering::Relaxed));
        out
    }
}

#[cfg(test)]
mod tests {
    use patgate_core::{DenyReason, LegacyScope, LifetimeExcess, Requirement, Resources, Role};

    use super::*;

    #[test]
    fn a_failing_catch_up_shows_until_one_succeeds() {
        let metrics = Metrics::default();
        let line = |metrics: &Metrics, name: &str| {
            metrics.render(0, 0).lines().find(|line| line.starts_with(&format!("{name} "))).map(str::to_owned)
        };
        assert_eq!(line(&metrics, "patgate_catch_up_failing").as_deref(), Some("patgate_catch_up_failing 0"));
        metrics.record_catch_up(false);
        metrics.record_catch_up(false);
        assert!(metrics.catch_up_failing_for().is_some());
        assert_eq!(line(&metrics, "patgate_catch_up_failing").as_deref(), Some("patgate_catch_up_failing 1"));
        assert_eq!(
            line(&metrics, "patgate_catch_up_failures_total").as_deref(),
            Some("patgate_catch_up_failures_total 2")
        );
        metrics.record_catch_up(true);
        assert_eq!(metrics.catch_up_failing_for(), None);
        metrics.record_rebuild();
        assert_eq!(line(&metrics, "patgate_index_rebuilds_total").as_deref(), Some("patgate_index_rebuilds_total 1"));
    }

    #[test]
    fn every_reason_has_its_own_counter() {
        let resources = Resources::builtin().unwrap();
        let permission = resources.permission("issue:read").unwrap();
        let excess = LifetimeExcess { cap_days: 30, group: None };
        let decisions = [
            DenyReason::UnknownToken,
            DenyReason::Revoked,
            DenyReason::Expired,
            DenyReason::OwnerBlocked,
            DenyReason::IpNotAllowed,
            DenyReason::LifetimePolicy(excess),
            DenyReason::LegacyDisabled,
            DenyReason::EndpointNotCovered,
            DenyReason::AmbiguousPath,
            DenyReason::NotFound,
            DenyReason::OutsideReach,
            DenyReason::InsufficientScope(permission),
            DenyReason::RoleTooLow { permission, needed: Requirement::Member(Role::Developer) },
            DenyReason::LegacyScopeInsufficient(LegacyScope::Api),
            DenyReason::NotApplicable(permission),
        ];
        let codes = decisions.iter().map(DenyReason::code).chain(["allowed", "missing_token"]);
        // Forward auth's own refusals (routes/decision.rs).
        let codes = codes.chain(["untrusted_proxy", "missing_forwarded_request", "ambiguous_forwarded_request"]);
        for code in codes {
            assert_ne!(REASONS[reason_index(code)], "other", "`{code}` is counted as other");
        }
        assert_eq!(REASONS[reason_index("something new")], "other");
    }
}
