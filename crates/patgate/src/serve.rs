//! `patgate serve` and `patgate migrate`.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use crate::config::{Config, Overrides};

use anyhow::{Context, bail};
use patgate_core::{Resources, catalog::Catalog};
use patgate_server::{Clock, Shared, bootstrap, password::Password};
use patgate_store::{Actor, Audit, SqlStore, Store};

/// Options of `patgate serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: Overrides,
    /// Seed an example organisation and print a few ready tokens.
    #[arg(long)]
    pub demo: bool,
    /// Write the first admin token to this file (mode 0600) instead of only printing it.
    #[arg(long)]
    pub bootstrap_token_file: Option<PathBuf>,
    /// With --demo: the password the demo users sign in to the web UI with (12 characters
    /// or more) [default: a random one, printed once].
    #[arg(long, env = "PATGATE_DEMO_PASSWORD", hide_env_values = true)]
    pub demo_password: Option<Password>,
}

/// `patgate migrate`: apply pending migrations and exit.
pub async fn migrate(overrides: Overrides) -> anyhow::Result<()> {
    let config = Config::load(&overrides)?;
    let resources = Arc::new(Resources::builtin()?);
    SqlStore::connect(&config.database_url, resources).await.context("migrating the database")?;
    eprintln!("patgate: the database schema is current");
    Ok(())
}

/// `patgate check-config`: load and check the configuration, print it (secrets redacted).
pub fn check_config(overrides: Overrides) -> anyhow::Result<Config> {
    let config = Config::load(&overrides)?;
    Resources::builtin().context("the built-in resource table")?;
    let resources = Resources::builtin()?;
    Catalog::builtin(&resources).context("the built-in endpoint catalog")?;
    if config.secret_key_file.exists() {
        bootstrap::load_or_create_key(&config.secret_key_file).map_err(anyhow::Error::msg)?;
    }
    Ok(config)
}

/// `patgate serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    tracing::info!(?config, "starting");
    let resources = Resources::builtin().context("loading the resource table")?;
    let catalog = Catalog::builtin(&resources).context("loading the endpoint catalog")?;
    let trusted_proxies = config.trusted_proxies.clone();
    let store = SqlStore::connect(&config.database_url, Arc::new(resources.clone()))
        .await
        .context("opening the database")?
        .with_webhooks(config.webhooks.clone());
    let key = bootstrap::load_or_create_key(&config.secret_key_file).map_err(anyhow::Error::msg)?;
    let fingerprint = key.fingerprint();
    let mut shared = Shared::load(store, resources, catalog, key, trusted_proxies, Clock::System).await?;
    if let Some(path) = &config.webhook_secret_file {
        let secret = std::fs::read(path).with_context(|| format!("reading the webhook secret {}", path.display()))?;
        let secret = String::from_utf8_lossy(&secret).trim().as_bytes().to_vec();
        shared.webhook_secret = Some(
            patgate_server::webhook::WebhookSecret::new(&secret)
                .with_context(|| format!("{}: the webhook secret must be at least 16 bytes", path.display()))?,
        );
    } else if !config.webhooks.is_empty() {
        tracing::warn!("webhooks are configured without webhook_secret_file: deliveries are not signed");
    }
    shared.intervals.expiry_notices = config.expiry_notice_interval;
    shared.intervals.inactivity = config.inactivity_interval;
    shared.intervals.lease = config.job_lease;
    if let Some(header) = &config.ui_trusted_user_header {
        shared.ui_trusted_user_header = Some(
            axum::http::HeaderName::from_bytes(header.as_bytes())
                .with_context(|| format!("ui_trusted_user_header `{header}`"))?,
        );
        tracing::info!(header = %header, "web sign-in by a trusted proxy's header is on (from the trusted proxies only)");
    }
    // A demo password is checked before anything is seeded.
    let demo_password = match &args.demo_password {
        Some(_) if !args.demo => {
            tracing::warn!("PATGATE_DEMO_PASSWORD (--demo-password) is ignored without --demo");
            None
        }
        Some(password) => {
            password.check_rules("PATGATE_DEMO_PASSWORD").map_err(|error| anyhow::anyhow!("{error}"))?;
            Some(password.clone())
        }
        None => None,
    };
    let shared = Arc::new(shared);

    // The first replica to start on a new database records its secret's fingerprint (under
    // the write lock: of replicas starting at once with different secrets, one wins and the
    // others stop here).
    let stored = if shared.settings().key_fingerprint.is_empty() {
        let audit = Audit::new("settings_changed", Actor::default(), shared.clock.now());
        let stored = shared.store.claim_key_fingerprint(&fingerprint, audit).await?;
        shared.catch_up().await?;
        stored
    } else {
        shared.settings().key_fingerprint
    };
    if stored != fingerprint {
        bail!(
            "{} is not the secret this database's tokens were made with (fingerprint {stored} expected); \
             use the right secret file or every token would stop working",
            config.secret_key_file.display(),
        );
    }

    // A first start, or one where no administrator can manage the instance any more
    // (docs/lifecycle.md, "The first admin token").
    let made = match bootstrap::bootstrap_admin(&shared, args.bootstrap_token_file.as_deref()).await {
        // `admin` cannot be had (a group holds the name): serving on beats not starting.
        Err(bootstrap::BootstrapError::Store(error @ patgate_store::StoreError::Conflict(_))) => {
            tracing::error!(%error, "no administrator can manage this instance, and user `admin` cannot be made one");
            None
        }
        made => made?,
    };
    if let Some(made) = made {
        let what = if made.created_user {
            "created user `admin`"
        } else {
            tracing::warn!("no administrator could manage this instance: user `admin` has a new admin token");
            "no administrator could manage this instance: made a new token for user `admin`"
        };
        match made.file {
            Some(Ok(path)) => eprintln!("patgate: {what}; its token is in {} (shown once)", path.display()),
            Some(Err((temporary, error))) => {
                let wanted = args.bootstrap_token_file.as_deref().unwrap_or(temporary.as_path());
                eprintln!(
                    "patgate: {what}; its token could not be moved to {} ({error}) and is in {} (shown once)",
                    wanted.display(),
                    temporary.display()
                );
            }
            None => eprintln!("patgate: {what} with token (shown once):\n\n    {}\n", made.token.expose_secret()),
        }
    }
    if args.demo {
        let tokens = bootstrap::seed_demo(&shared).await?;
        if !tokens.is_empty() {
            eprintln!("patgate: seeded the demo organisation (acme/…); ready tokens:");
            for (description, token) in tokens {
                eprintln!("  {description}\n    {}", token.expose_secret());
            }
            // Demo mode only: a real deployment never gets a fixed or printed password.
            let (password, chosen) = match demo_password {
                Some(password) => (password, true),
                None => (bootstrap::random_demo_password()?, false),
            };
            let users = bootstrap::set_demo_passwords(&shared, &password).await?;
            if !users.is_empty() {
                if chosen {
                    eprintln!("patgate: {} sign in to the web UI with PATGATE_DEMO_PASSWORD", users.join(", "));
                } else {
                    eprintln!(
                        "patgate: {} sign in to the web UI with the password (shown once):\n\n    {}\n",
                        users.join(", "),
                        password.expose_secret()
                    );
                }
            }
        }
    }

    let (following, ready) = tokio::sync::oneshot::channel();
    tokio::spawn(patgate_server::replica::follow(shared.clone(), config.database_url.clone(), following));
    // Answer only once changes from other replicas are being followed (or the attempt failed
    // and polling took over), so a change committed right after start is never missed.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), ready).await;
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, backend = shared.store.backend().name(), "patgate is serving");
    patgate_server::jobs::spawn(shared.clone());
    eprintln!("patgate: serving on http://{address}");
    axum::serve(listener, patgate_server::router(shared.clone()).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown())
        .await?;
    // A clean shutdown loses no recorded use.
    match patgate_server::jobs::flush_usage(&shared).await {
        Ok(flushed) => tracing::info!(tokens = flushed, "usage flushed at shutdown"),
        Err(error) => tracing::error!(%error, "flushing usage at shutdown failed"),
    }
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
