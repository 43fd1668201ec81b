//! `patgate serve` and `patgate migrate`.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::{Context, bail};
use patgate_core::{Resources, catalog::Catalog, net::IpNet};
use patgate_server::{Clock, Shared, bootstrap};
use patgate_store::{Actor, Audit, SqlStore, Store};

/// Options of `patgate serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "PATGATE_LISTEN")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// File holding the instance secret that keys token digests (created on first start).
    /// Every replica on one database needs the same secret.
    #[arg(long, default_value = "patgate.key", env = "PATGATE_SECRET_KEY_FILE")]
    pub secret_key_file: PathBuf,
    /// Addresses allowed to send X-Forwarded-* / X-Original-* headers to forward auth.
    #[arg(long = "trusted-proxy", default_values = ["127.0.0.0/8", "::1"], env = "PATGATE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// Seed an example organisation and print a few ready tokens.
    #[arg(long)]
    pub demo: bool,
    /// Write the first admin token to this file (mode 0600) instead of only printing it.
    #[arg(long)]
    pub bootstrap_token_file: Option<PathBuf>,
}

/// Where the database is.
#[derive(Debug, clap::Args)]
pub struct DatabaseArgs {
    /// `sqlite://FILE` (created on first start) or `postgres://…`.
    #[arg(long, default_value = "sqlite://patgate.db", env = "PATGATE_DATABASE_URL")]
    pub database_url: String,
}

/// `patgate migrate`: apply pending migrations and exit.
pub async fn migrate(database: DatabaseArgs) -> anyhow::Result<()> {
    let resources = Arc::new(Resources::builtin()?);
    SqlStore::connect(&database.database_url, resources).await.context("migrating the database")?;
    eprintln!("patgate: the database schema is current");
    Ok(())
}

/// `patgate serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let resources = Resources::builtin().context("loading the resource table")?;
    let catalog = Catalog::builtin(&resources).context("loading the endpoint catalog")?;
    let trusted_proxies = args
        .trusted_proxies
        .iter()
        .map(|text| text.parse::<IpNet>().map_err(anyhow::Error::from))
        .collect::<anyhow::Result<Vec<_>>>()
        .context("--trusted-proxy")?;
    let store = SqlStore::connect(&args.database.database_url, Arc::new(resources.clone()))
        .await
        .context("opening the database")?;
    let key = bootstrap::load_or_create_key(&args.secret_key_file).map_err(anyhow::Error::msg)?;
    let fingerprint = key.fingerprint();
    let shared = Arc::new(Shared::load(store, resources, catalog, key, trusted_proxies, Clock::System).await?);

    let mut settings = shared.settings();
    if settings.key_fingerprint.is_empty() {
        settings.key_fingerprint = fingerprint;
        let audit = Audit::new("settings_changed", Actor::default(), shared.clock.now());
        shared.store.put_settings(&settings, audit).await?;
        shared.catch_up().await?;
    } else if settings.key_fingerprint != fingerprint {
        bail!(
            "{} is not the secret this database's tokens were made with (fingerprint {} expected); \
             use the right secret file or every token would stop working",
            args.secret_key_file.display(),
            settings.key_fingerprint
        );
    }

    if let Some(token) = bootstrap::ensure_admin(&shared).await? {
        match &args.bootstrap_token_file {
            Some(path) => {
                bootstrap::write_private(path, token.expose_secret())
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("patgate: created user `admin`; its token is in {} (shown once)", path.display());
            }
            None => {
                eprintln!("patgate: created user `admin` with token (shown once):\n\n    {}\n", token.expose_secret())
            }
        }
    }
    if args.demo {
        let tokens = bootstrap::seed_demo(&shared).await?;
        if !tokens.is_empty() {
            eprintln!("patgate: seeded the demo organisation (acme/…); ready tokens:");
            for (description, token) in tokens {
                eprintln!("  {description}\n    {}", token.expose_secret());
            }
        }
    }

    tokio::spawn(patgate_server::replica::follow(shared.clone(), args.database.database_url.clone()));
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, backend = shared.store.backend().name(), "patgate is serving");
    eprintln!("patgate: serving on http://{address}");
    axum::serve(listener, patgate_server::router(shared).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}

async fn shutdown() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
