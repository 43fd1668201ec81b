//! One typed configuration: defaults, then a TOML file, then `PATGATE_*` environment
//! variables and flags (clap reads both), later layers winning.

use std::{fmt, net::SocketAddr, path::PathBuf};

use anyhow::Context;
use patgate_core::net::IpNet;
use serde::Deserialize;

/// The configuration file's shape; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub database_url: Option<String>,
    pub secret_key_file: Option<PathBuf>,
    pub trusted_proxies: Option<Vec<String>>,
    pub webhook_urls: Option<Vec<String>>,
    pub webhook_events: Option<Vec<String>>,
    pub webhook_secret_file: Option<PathBuf>,
    pub expiry_notice_interval_seconds: Option<u64>,
    pub inactivity_interval_seconds: Option<u64>,
    pub job_lease_seconds: Option<u64>,
    pub ui_trusted_user_header: Option<String>,
}

/// What the command line and environment gave (clap fills these).
#[derive(Debug, Default, clap::Args)]
pub struct Overrides {
    /// A TOML configuration file (see patgate.example.toml).
    #[arg(long, env = "PATGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "PATGATE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// `sqlite://FILE` (created on first start) or `postgres://…` [default: sqlite://patgate.db].
    #[arg(long, env = "PATGATE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// File holding the instance secret that keys token digests, created on first start;
    /// every replica on one database needs the same secret [default: patgate.key].
    #[arg(long, env = "PATGATE_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
    /// Addresses allowed to send X-Forwarded-* / X-Original-* headers to forward auth
    /// [default: 127.0.0.0/8,::1].
    #[arg(long = "trusted-proxy", env = "PATGATE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// Webhook receivers of token lifecycle events (expiry notices, revocations, leaks,
    /// reuse, new client addresses), as a comma-separated list of http(s) URLs.
    #[arg(long = "webhook-url", env = "PATGATE_WEBHOOK_URLS", value_delimiter = ',')]
    pub webhook_urls: Option<Vec<String>>,
    /// The audit event types sent to the webhooks [default: the lifecycle events].
    #[arg(long = "webhook-event", env = "PATGATE_WEBHOOK_EVENTS", value_delimiter = ',')]
    pub webhook_events: Option<Vec<String>>,
    /// File holding the secret (16 bytes or more) webhook bodies are signed with
    /// (X-Patgate-Signature: sha256=HMAC(secret, "{timestamp}.{body}")).
    #[arg(long, env = "PATGATE_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Seconds between runs of the expiry-notice job [default: 60].
    #[arg(long, env = "PATGATE_EXPIRY_NOTICE_INTERVAL_SECONDS")]
    pub expiry_notice_interval_seconds: Option<u64>,
    /// Seconds between runs of the inactivity job [default: 300].
    #[arg(long, env = "PATGATE_INACTIVITY_INTERVAL_SECONDS")]
    pub inactivity_interval_seconds: Option<u64>,
    /// Seconds a replica holds the inactivity job's lease; a crashed holder's lease runs out
    /// after this [default: 120].
    #[arg(long, env = "PATGATE_JOB_LEASE_SECONDS")]
    pub job_lease_seconds: Option<u64>,
    /// Sign in to the web UI as the user a trusted proxy (an SSO proxy) names in this
    /// header, e.g. X-Forwarded-User; honoured only from the trusted proxies, which must
    /// strip it from their clients' requests [default: off].
    #[arg(long, env = "PATGATE_UI_TRUSTED_USER_HEADER")]
    pub ui_trusted_user_header: Option<String>,
}

/// The effective configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub secret_key_file: PathBuf,
    pub trusted_proxies: Vec<IpNet>,
    pub webhooks: Vec<patgate_store::WebhookTarget>,
    pub webhook_secret_file: Option<PathBuf>,
    pub expiry_notice_interval: std::time::Duration,
    pub inactivity_interval: std::time::Duration,
    pub job_lease: std::time::Duration,
    /// The header a trusted proxy names the signed-in user in (lowercase), if that sign-in is on.
    pub ui_trusted_user_header: Option<String>,
}

/// Headers that carry credentials, addresses or the CSRF token: never a user's name.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "private-token",
    "x-csrf-token",
    "x-forwarded-for",
    "x-real-ip",
    "host",
];

/// The trusted-user header's name, checked and lowercased.
fn trusted_user_header(text: &str) -> anyhow::Result<Option<String>> {
    let name = text.trim().to_ascii_lowercase();
    if name.is_empty() {
        return Ok(None);
    }
    if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        anyhow::bail!("ui_trusted_user_header: `{name}` is not a header name");
    }
    if RESERVED_HEADERS.contains(&name.as_str()) {
        anyhow::bail!("ui_trusted_user_header: `{name}` carries something else; use a header such as X-Forwarded-User");
    }
    Ok(Some(name))
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &redact_url(&self.database_url))
            .field("secret_key_file", &self.secret_key_file)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("webhooks", &Webhooks(&self.webhooks))
            .field("webhook_secret_file", &self.webhook_secret_file)
            .field("expiry_notice_interval", &self.expiry_notice_interval)
            .field("inactivity_interval", &self.inactivity_interval)
            .field("job_lease", &self.job_lease)
            .field("ui_trusted_user_header", &self.ui_trusted_user_header)
            .finish()
    }
}

/// The webhook targets as `Debug` shows them: each receiver without its URL's secrets.
struct Webhooks<'a>(&'a [patgate_store::WebhookTarget]);

impl fmt::Debug for Webhooks<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.0.iter().map(|target| Webhook {
                    url: patgate_server::webhook::receiver(&target.url),
                    events: &target.events,
                }),
            )
            .finish()
    }
}

#[derive(Debug)]
#[expect(dead_code, reason = "read by the derived Debug only")]
struct Webhook<'a> {
    url: String,
    events: &'a [String],
}

/// Whether a URL's query parameter `key` carries a secret (sqlx's `password`,
/// `sslpassword`, and the like).
fn secret_parameter(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "secret", "token"].iter().any(|word| key.contains(word))
}

/// A database URL with its password replaced, for logs and `check-config`: the userinfo's
/// password (which may hold `@`: the URL's last `@` ends it) and secret query parameters
/// (`?password=…`). A text that is no URL shows nothing of itself.
pub fn redact_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else { return "[not a URL]".to_owned() };
    // A marker the URL's own encoding leaves alone, swapped for the brackets below.
    const MARKER: &str = "REDACTED";
    let had_password = url.password().is_some() && url.set_password(Some(MARKER)).is_ok();
    let query = url.query().map(|query| {
        query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if secret_parameter(key) => format!("{key}=[redacted]"),
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    url.set_query(None);
    url.set_fragment(None);
    let mut shown = url.to_string();
    if had_password {
        shown = shown.replacen(&format!(":{MARKER}@"), ":[redacted]@", 1);
    }
    if let Some(query) = query {
        shown.push('?');
        shown.push_str(&query);
    }
    shown
}

impl Config {
    /// Layers defaults, the file named by `--config` (if any) and the overrides.
    pub fn load(overrides: &Overrides) -> anyhow::Result<Config> {
        let file = match &overrides.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("{} is not a valid configuration", path.display()))?
            }
            None => FileConfig::default(),
        };
        Config::layer(file, overrides)
    }

    fn layer(file: FileConfig, overrides: &Overrides) -> anyhow::Result<Config> {
        let database_url =
            overrides.database_url.clone().or(file.database_url).unwrap_or_else(|| "sqlite://patgate.db".to_owned());
        if patgate_store::Backend::of_url(&database_url).is_none() {
            anyhow::bail!("database_url `{}` must start with sqlite: or postgres://", redact_url(&database_url));
        }
        let proxies = overrides
            .trusted_proxies
            .clone()
            .or(file.trusted_proxies)
            .unwrap_or_else(|| vec!["127.0.0.0/8".to_owned(), "::1".to_owned()]);
        let trusted_proxies = proxies
            .iter()
            .map(|text| text.trim().parse::<IpNet>().map_err(|error| anyhow::anyhow!("trusted_proxies: {error}")))
            .collect::<anyhow::Result<_>>()?;
        let urls = overrides.webhook_urls.clone().or(file.webhook_urls).unwrap_or_default();
        let events = overrides.webhook_events.clone().or(file.webhook_events).unwrap_or_default();
        let mut webhooks = Vec::new();
        for url in urls.iter().map(|url| url.trim()).filter(|url| !url.is_empty()) {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                let shown = patgate_server::webhook::receiver(url);
                anyhow::bail!("webhook_urls: `{shown}` must be an http:// or https:// URL");
            }
            webhooks.push(patgate_store::WebhookTarget {
                url: url.to_owned(),
                events: events.iter().map(|event| event.trim().to_owned()).filter(|e| !e.is_empty()).collect(),
            });
        }
        let webhook_secret_file = overrides.webhook_secret_file.clone().or(file.webhook_secret_file);
        let ui_trusted_user_header = match overrides.ui_trusted_user_header.clone().or(file.ui_trusted_user_header) {
            Some(text) => trusted_user_header(&text)?,
            None => None,
        };
        let seconds = |name: &str, value: Option<u64>, default: u64| -> anyhow::Result<std::time::Duration> {
            match value.unwrap_or(default) {
                0 => anyhow::bail!("{name} must be at least 1 second"),
                seconds => Ok(std::time::Duration::from_secs(seconds)),
            }
        };
        Ok(Config {
            webhooks,
            webhook_secret_file,
            ui_trusted_user_header,
            expiry_notice_interval: seconds(
                "expiry_notice_interval_seconds",
                overrides.expiry_notice_interval_seconds.or(file.expiry_notice_interval_seconds),
                60,
            )?,
            inactivity_interval: seconds(
                "inactivity_interval_seconds",
                overrides.inactivity_interval_seconds.or(file.inactivity_interval_seconds),
                300,
            )?,
            job_lease: seconds("job_lease_seconds", overrides.job_lease_seconds.or(file.job_lease_seconds), 120)?,
            listen: overrides.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            database_url,
            secret_key_file: overrides
                .secret_key_file
                .clone()
                .or(file.secret_key_file)
                .unwrap_or_else(|| PathBuf::from("patgate.key")),
            trusted_proxies,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses_to_the_defaults() {
        let text = include_str!("../../../patgate.example.toml");
        let file: FileConfig = toml::from_str(text).unwrap();
        let from_file = Config::layer(file, &Overrides::default()).unwrap();
        let defaults = Config::layer(FileConfig::default(), &Overrides::default()).unwrap();
        assert_eq!(from_file, defaults);
    }

    #[test]
    fn later_layers_win_and_bad_values_are_refused() {
        let file: FileConfig =
            toml::from_str("listen = \"0.0.0.0:9000\"\ndatabase_url = \"postgres://u:hunter2@db/x\"").unwrap();
        let overrides = Overrides { listen: Some("127.0.0.1:7000".parse().unwrap()), ..Overrides::default() };
        let config = Config::layer(file, &overrides).unwrap();
        assert_eq!(config.listen.port(), 7000);
        assert_eq!(config.database_url, "postgres://u:hunter2@db/x");
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(toml::from_str::<FileConfig>("lisen = \"x\"").is_err());
        let bad = FileConfig { database_url: Some("mysql://x".into()), ..FileConfig::default() };
        assert!(Config::layer(bad, &Overrides::default()).is_err());
        let bad = FileConfig { trusted_proxies: Some(vec!["10.0.0.1/8".into()]), ..FileConfig::default() };
        assert!(Config::layer(bad, &Overrides::default()).is_err());
    }

    #[test]
    fn no_password_or_webhook_secret_reaches_the_debug_output() {
        let file: FileConfig = toml::from_str(
            r#"
database_url = "postgres://u:p@ss@db/x"
webhook_urls = ["https://u:token@hooks.example/x", "https://hooks.slack.example/services/T0/B0/XYZSECRET?sig=abc"]
"#,
        )
        .unwrap();
        let config = Config::layer(file, &Overrides::default()).unwrap();
        let shown = format!("{config:?}\n{config:#?}");
        for secret in ["ss@db", "p@ss", "token", "XYZSECRET", "abc"] {
            assert!(!shown.contains(secret), "`{secret}` in {shown}");
        }
        assert!(shown.contains("postgres://u:[redacted]@db/x"), "{shown}");
        assert!(
            shown.contains("https://hooks.example/…") && shown.contains("https://hooks.slack.example/…"),
            "{shown}"
        );

        let file: FileConfig =
            toml::from_str("database_url = \"postgres://u@db/x?sslmode=require&password=hunter2\"").unwrap();
        let config = Config::layer(file, &Overrides::default()).unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://u@db/x?sslmode=require&password=[redacted]"), "{shown}");
    }

    #[test]
    fn a_redacted_url_keeps_what_is_not_secret() {
        assert_eq!(redact_url("postgres://u:hunter2@db:5432/x"), "postgres://u:[redacted]@db:5432/x");
        assert_eq!(
            redact_url("postgres://db/x?application_name=p&sslpassword=b"),
            "postgres://db/x?application_name=p&sslpassword=[redacted]"
        );
        assert_eq!(redact_url("postgresql://u@db/x"), "postgresql://u@db/x");
        for sqlite in [
            "sqlite://patgate.db",
            "sqlite://patgate.db?cache=shared",
            "sqlite:///var/lib/patgate.db",
            "sqlite::memory:",
        ] {
            assert_eq!(redact_url(sqlite), sqlite);
        }
        // A bad webhook URL is refused without showing its credentials.
        let file = FileConfig { webhook_urls: Some(vec!["ftp://u:s3cret@h/x".into()]), ..FileConfig::default() };
        let error = Config::layer(file, &Overrides::default()).unwrap_err().to_string();
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn the_trusted_user_header_is_off_by_default_checked_and_lowercased() {
        let defaults = Config::layer(FileConfig::default(), &Overrides::default()).unwrap();
        assert_eq!(defaults.ui_trusted_user_header, None);
        let file: FileConfig = toml::from_str("ui_trusted_user_header = \"X-Forwarded-User\"").unwrap();
        let config = Config::layer(file, &Overrides::default()).unwrap();
        assert_eq!(config.ui_trusted_user_header.as_deref(), Some("x-forwarded-user"));
        let overrides = Overrides { ui_trusted_user_header: Some("Remote-User".into()), ..Overrides::default() };
        let file: FileConfig = toml::from_str("ui_trusted_user_header = \"X-Forwarded-User\"").unwrap();
        assert_eq!(Config::layer(file, &overrides).unwrap().ui_trusted_user_header.as_deref(), Some("remote-user"));
        for bad in ["Authorization", "Cookie", "X-Forwarded-For", "not a header"] {
            let overrides = Overrides { ui_trusted_user_header: Some(bad.into()), ..Overrides::default() };
            assert!(Config::layer(FileConfig::default(), &overrides).is_err(), "{bad}");
        }
    }
}
