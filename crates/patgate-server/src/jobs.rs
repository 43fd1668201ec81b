//! Background work of the token lifecycle: flushing usage, expiry notices, revoking
//! inactive tokens and delivering webhooks. Each step is a function a test can call with
//! an injected clock; [`spawn`] runs them on timers.
//!
//! Every step is safe with several replicas and after a crash: notices and revocations are
//! conditional updates committed with their audit event (a repeat finds nothing to do),
//! deliveries are claimed for a while before they are sent, and the inactivity run holds a
//! lease so that one replica does the work.

use std::time::Duration;

use patgate_core::Timestamp;
use patgate_store::{Actor, Audit, Store, StoreError};

use crate::state::Shared;

/// How often each job runs.
#[derive(Clone, Copy, Debug)]
pub struct Intervals {
    /// Folding the decision threads' usage events into the per-token aggregate.
    pub usage_compact: Duration,
    pub usage_flush: Duration,
    pub deliveries: Duration,
    pub expiry_notices: Duration,
    pub inactivity: Duration,
    /// How long the inactivity lease lasts; a crashed holder's lease runs out after this.
    pub lease: Duration,
}

impl Default for Intervals {
    fn default() -> Intervals {
        Intervals {
            usage_compact: Duration::from_millis(100),
            usage_flush: Duration::from_secs(5),
            deliveries: Duration::from_secs(1),
            expiry_notices: Duration::from_secs(60),
            inactivity: Duration::from_secs(300),
            lease: Duration::from_secs(120),
        }
    }
}

/// Writes the usage recorded since the last flush; on failure puts it back for the next.
/// Waits for a flush in progress first: once this returns, every use recorded before the
/// call is in the store (or was put back by a failed write), never still in another
/// flush's hands.
pub async fn flush_usage(shared: &Shared) -> Result<usize, StoreError> {
    let _flushing = shared.usage_flush.lock().await;
    let mut uses = shared.usage.take();
    let mut flushed = 0;
    // A few hundred tokens a transaction: on SQLite, with one writer at a time, a
    // revocation waits for one of them at most, not for the whole flush.
    while !uses.is_empty() {
        let rest = uses.split_off(uses.len().min(USAGE_FLUSH_CHUNK));
        match shared.store.record_usage(&uses).await {
            Ok(_) => flushed += uses.len(),
            Err(error) => {
                // What was written stays written (counts are added, never twice).
                uses.extend(rest);
                shared.usage.restore(uses);
                return Err(error);
            }
        }
        uses = rest;
    }
    Ok(flushed)
}

/// Tokens whose use one transaction of a flush records.
pub const USAGE_FLUSH_CHUNK: usize = 500;

/// Sends each expiry notice now due (60, 30, 7 days before and on the day), once per token.
pub async fn send_expiry_notices(shared: &Shared) -> Result<usize, StoreError> {
    let now = shared.clock.now();
    let mut sent = 0;
    loop {
        let due = shared.store.expiry_notices_due(now, 500).await?;
        if due.is_empty() {
            return Ok(sent);
        }
        let batch = due.len();
        for (token, days) in due {
            let event = if days == 0 { "token_expired" } else { "token_expiry_notice" };
            let audit = Audit::new(event, Actor::default(), now).user(token.owner).details(serde_json::json!({
                "days_before": days,
                "name": token.name,
                "expires_at": token.expires_at.map(|at| at.to_string()),
            }));
            if shared.store.record_expiry_notice(token.id, days, audit).await? {
                sent += 1;
            }
        }
        if batch < 500 {
            return Ok(sent);
        }
    }
}

/// Revokes tokens unused for longer than the inactivity policy allows, if this replica holds
/// the job's lease. Returns how many it revoked.
pub async fn revoke_inactive(shared: &Shared) -> Result<usize, StoreError> {
    let days = shared.settings().inactivity_days;
    if days == 0 {
        return Ok(0);
    }
    let mut revoked = 0;
    loop {
        let now = shared.clock.now();
        let lease_until =
            Timestamp(now.0.saturating_add(i64::try_from(shared.intervals.lease.as_secs()).unwrap_or(120)));
        if !shared.store.try_lease("inactivity", &shared.holder, now, lease_until).await? {
            return Ok(revoked);
        }
        let cutoff = now.plus_days(-i64::from(days));
        let ids = shared.store.inactive_tokens(cutoff, now, 200).await?;
        if ids.is_empty() {
            return Ok(revoked);
        }
        let audit =
            Audit::new("token_revoked", Actor::default(), now).details(serde_json::json!({ "inactivity_days": days }));
        let (done, _) = shared.store.revoke_tokens(&ids, "inactive", audit).await?;
        revoked += done.len();
        shared.catch_up().await?;
        if ids.len() < 200 {
            return Ok(revoked);
        }
    }
}

/// Deliveries claimed at once; they are sent concurrently.
const DELIVERY_BATCH: u32 = 50;
/// Batches per run, so one run of a large backlog ends.
const DELIVERY_ROUNDS: usize = 20;

/// Sends the webhook deliveries due now, concurrently per batch; returns how many were
/// delivered.
pub async fn deliver_webhooks(shared: &Shared) -> Result<usize, StoreError> {
    // Deliveries go to configured webhooks only (a removed webhook's backlog waits).
    if shared.store.webhooks().is_empty() {
        return Ok(0);
    }
    let mut delivered = 0;
    for _ in 0..DELIVERY_ROUNDS {
        let now = shared.clock.now();
        // A batch ends within one attempt's timeout; the claim outlasts it, so no other
        // replica sends these meanwhile, and a crash frees them soon after.
        let claim = i64::try_from(crate::webhook::ATTEMPT_TIMEOUT.as_secs()).unwrap_or(10) + 5;
        let deliveries = shared.store.claim_deliveries(now, Timestamp(now.0 + claim), DELIVERY_BATCH).await?;
        let claimed = deliveries.len();
        let sends: Vec<_> = deliveries
            .into_iter()
            .map(|delivery| {
                let agent = shared.webhook_agent.clone();
                let secret = shared.webhook_secret.clone();
                tokio::task::spawn_blocking(move || {
                    let attempt = crate::webhook::send(&agent, secret.as_ref(), &delivery, now);
                    (delivery, attempt)
                })
            })
            .collect();
        for send in sends {
            let (delivery, attempt) =
                send.await.map_err(|error| StoreError::Database(format!("webhook sender: {error}")))?;
            if attempt.error.is_none() {
                delivered += 1;
            } else {
                // The receiver's host only: a webhook URL may carry a secret.
                tracing::warn!(
                    delivery = delivery.id,
                    receiver = %crate::webhook::receiver(&delivery.url),
                    error = attempt.error.as_deref().unwrap_or(""),
                    "webhook delivery failed; will retry"
                );
            }
            shared.store.record_delivery(delivery.id, &attempt).await?;
        }
        if claimed < DELIVERY_BATCH as usize {
            break;
        }
    }
    Ok(delivered)
}

/// Runs every job on its timer until the process ends.
pub fn spawn(shared: crate::state::AppState) {
    let intervals = shared.intervals;
    macro_rules! every {
        ($period:expr, $name:literal, $job:path) => {{
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut timer = tokio::time::interval($period);
                timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    timer.tick().await;
                    if let Err(error) = $job(&shared).await {
                        tracing::warn!(%error, job = $name, "background job failed; retrying at its next run");
                    }
                }
            });
        }};
    }
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut timer = tokio::time::interval(intervals.usage_compact);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                timer.tick().await;
                shared.usage.compact();
            }
        });
    }
    every!(intervals.usage_flush, "usage_flush", flush_usage);
    every!(intervals.deliveries, "webhook_deliveries", deliver_webhooks);
    every!(intervals.expiry_notices, "expiry_notices", send_expiry_notices);
    every!(intervals.inactivity, "inactivity", revoke_inactive);
}
