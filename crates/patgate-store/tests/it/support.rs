//! Stores to run the suite against, each on a fresh database.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use patgate_core::Resources;
use patgate_store::{SqlStore, StoreError, WebhookTarget};
use sqlx::Connection;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}_{}_{}_{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A fresh database for one test; the SQLite file or PostgreSQL database is dropped after.
pub struct TestDatabase {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    File(std::path::PathBuf),
    Postgres { admin_url: String, name: String },
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Cleanup::Postgres { admin_url, name } => {
                let admin_url = admin_url.clone();
                let name = name.clone();
                // Dropping needs async; a short-lived runtime on its own thread does it.
                let _ = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                    runtime.block_on(async {
                        let mut admin = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                            .execute(&mut admin)
                            .await
                            .ok()
                    })
                })
                .join();
            }
        }
    }
}

/// One fresh database per backend under test.
pub async fn databases() -> Vec<TestDatabase> {
    let path = std::env::temp_dir().join(format!("{}.db", unique("patgate_store")));
    let mut databases =
        vec![TestDatabase { url: format!("sqlite://{}", path.display()), cleanup: Cleanup::File(path) }];
    if let Ok(admin_url) = std::env::var("PATGATE_TEST_POSTGRES_URL") {
        let name = unique("patgate_test");
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        // A language's collation (ICU, English), as production databases often have, rather
        // than the server's default (often C, where text orders byte-wise anyway): the store
        // must not depend on it.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        databases.push(TestDatabase { url: format!("{base}/{name}"), cleanup: Cleanup::Postgres { admin_url, name } });
    }
    databases
}

pub fn resources() -> Arc<Resources> {
    Arc::new(Resources::builtin().unwrap())
}

pub async fn connect(database: &TestDatabase) -> Result<SqlStore, StoreError> {
    SqlStore::connect(&database.url, resources()).await
}

/// A store that turns audit events into deliveries to `targets`.
pub async fn connect_with_webhooks(
    database: &TestDatabase,
    targets: Vec<WebhookTarget>,
) -> Result<SqlStore, StoreError> {
    Ok(connect(database).await?.with_webhooks(targets))
}
