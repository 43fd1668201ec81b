//! Following other replicas' changes: LISTEN/NOTIFY on PostgreSQL for speed, and a
//! catch-up by sequence number on every notification, after a reconnect, and on a timer,
//! so nothing is ever skipped.

use std::time::Duration;

use patgate_store::{Backend, ChangeListener, Heard, Store};

use crate::state::AppState;

/// How often a replica catches up even without a notification.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Runs until the process ends: applies every change committed by any replica.
///
/// `ready` fires once the first attempt to LISTEN has been made and the replica has caught
/// up after it, so a server can wait for it before it starts answering.
pub async fn follow(state: AppState, database_url: String, ready: tokio::sync::oneshot::Sender<()>) {
    let postgres = state.store.backend() == Backend::Postgres;
    let mut listener: Option<ChangeListener> = None;
    let mut backoff = Duration::from_millis(100);
    let mut ready = Some(ready);
    loop {
        // A fresh LISTEN connection may have missed notifications committed while it was
        // coming up: catch up right away instead of waiting for the next one or the timer.
        let mut just_connected = false;
        if postgres && listener.is_none() {
            match ChangeListener::connect(&database_url).await {
                Ok(connected) => {
                    listener = Some(connected);
                    backoff = Duration::from_millis(100);
                    just_connected = true;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot LISTEN for changes; polling");
                    backoff = (backoff * 2).min(Duration::from_secs(10));
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
                tokio::time::sleep(if postgres { backoff.min(POLL_INTERVAL) } else { POLL_INTERVAL }).await;
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
