//! Following other replicas' changes: LISTEN/NOTIFY on PostgreSQL for speed, and a
//! catch-up by sequence number on every notification, after a reconnect, and on a timer,
//! so nothing is ever skipped.

use std::time::{Duration, Instant};

use patgate_store::{Backend, ChangeListener, Heard, Store};

use crate::state::AppState;

/// How often a replica catches up even without a notification.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The longest wait between two attempts to LISTEN again.
pub const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(30);

/// When to try the LISTEN connection again after it failed: at once the first time, then
/// after a wait that doubles from [`POLL_INTERVAL`] to [`MAX_RECONNECT_BACKOFF`], so that an
/// endpoint that refuses (down, or a pooler without LISTEN) is not hammered, nor the log
/// filled, every second. Catching up by polling goes on meanwhile.
#[derive(Clone, Copy, Debug)]
pub struct Reconnect {
    backoff: Duration,
    next: Option<Instant>,
}

impl Default for Reconnect {
    fn default() -> Reconnect {
        Reconnect { backoff: POLL_INTERVAL, next: None }
    }
}

impl Reconnect {
    /// Whether to try connecting at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.next.is_none_or(|next| now >= next)
    }

    /// An attempt at `now` failed.
    pub fn failed(&mut self, now: Instant) {
        self.next = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_RECONNECT_BACKOFF);
    }

    /// An attempt succeeded: a later failure starts from the shortest wait again.
    pub fn connected(&mut self) {
        *self = Reconnect::default();
    }
}

/// Runs until the process ends: applies every change committed by any replica.
///
/// `ready` fires once the first attempt to LISTEN has been made and the replica has caught
/// up after it, so a server can wait for it before it starts answering.
pub async fn follow(state: AppState, database_url: String, ready: tokio::sync::oneshot::Sender<()>) {
    let postgres = state.store.backend() == Backend::Postgres;
    let mut listener: Option<ChangeListener> = None;
    let mut reconnect = Reconnect::default();
    let mut ready = Some(ready);
    loop {
        // A fresh LISTEN connection may have missed notifications committed while it was
        // coming up: catch up right away instead of waiting for the next one or the timer.
        let mut just_connected = false;
        if postgres && listener.is_none() && reconnect.due(Instant::now()) {
            match ChangeListener::connect(&database_url).await {
                Ok(connected) => {
                    listener = Some(connected);
                    reconnect.connected();
                    just_connected = true;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot LISTEN for changes; polling every second meanwhile");
                    reconnect.failed(Instant::now());
                }
            }
        }
        if just_connected || ready.is_some() {
            if let Err(error) = state.catch_up().await {
                tracing::warn!(%error, "catching up with the change log failed; retrying");
            }
            if let Some(ready) = ready.take() {
                let _ = ready.send(());
            }
            continue;
        }
        let heard = match listener.as_mut() {
            Some(active) => tokio::select! {
                heard = active.next() => Some(heard),
                () = tokio::time::sleep(POLL_INTERVAL) => None,
            },
            None => {
                tokio::time::sleep(POLL_INTERVAL).await;
                None
            }
        };
        match heard {
            Some(Ok(Heard::Change(sequence))) if sequence <= state.applied_sequence().await => continue,
            Some(Err(error)) => {
                tracing::warn!(%error, "change listener failed; reconnecting");
                listener = None;
            }
            _ => {}
        }
        if let Err(error) = state.catch_up().await {
            tracing::warn!(%error, "catching up with the change log failed; retrying");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minute of the follower's one-second polls against an endpoint that always refuses:
    /// a few attempts to connect, further and further apart, instead of one a second.
    #[test]
    fn a_refusing_listen_endpoint_is_retried_less_and_less_often() {
        let start = Instant::now();
        let mut reconnect = Reconnect::default();
        let mut attempts = Vec::new();
        for second in 0..60 {
            let now = start + Duration::from_secs(second);
            if reconnect.due(now) {
                attempts.push(second);
                reconnect.failed(now);
            }
        }
        assert_eq!(attempts, [0, 1, 3, 7, 15, 31]);
        // Never more than the longest wait apart, and back to quick after a success.
        let late = start + Duration::from_secs(3600);
        reconnect.failed(late);
        assert!(reconnect.due(late + MAX_RECONNECT_BACKOFF));
        reconnect.connected();
        assert!(reconnect.due(late));
        reconnect.failed(late);
        assert!(reconnect.due(late + POLL_INTERVAL) && !reconnect.due(late + POLL_INTERVAL / 2));
    }
}
