//! Hearing of other replicas' changes: PostgreSQL LISTEN/NOTIFY.

use sqlx::postgres::PgListener;

use crate::{StoreError, sql::NOTIFY_CHANNEL};

/// A connection LISTENing for change notifications.
#[derive(Debug)]
pub struct ChangeListener {
    listener: PgListener,
}

/// What the listener heard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heard {
    /// A change with this sequence number was committed.
    Change(i64),
    /// The connection dropped and was re-established: notifications may have been
    /// missed, so catch up from the change log.
    Reconnected,
}

impl ChangeListener {
    /// Connects to PostgreSQL at `url` and listens on patgate's channel.
    pub async fn connect(url: &str) -> Result<ChangeListener, StoreError> {
        let mut listener = PgListener::connect(url).await.map_err(|error| StoreError::Database(error.to_string()))?;
        listener.listen(NOTIFY_CHANNEL).await.map_err(|error| StoreError::Database(error.to_string()))?;
        Ok(ChangeListener { listener })
    }

    /// Waits for the next notification.
    pub async fn next(&mut self) -> Result<Heard, StoreError> {
        match self.listener.try_recv().await {
            Ok(Some(notification)) => {
                Ok(notification.payload().parse().map(Heard::Change).unwrap_or(Heard::Reconnected))
            }
            Ok(None) => Ok(Heard::Reconnected),
            Err(error) => Err(StoreError::Database(error.to_string())),
        }
    }
}
