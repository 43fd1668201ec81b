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
}

/// The effective configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub secret_key_file: PathBuf,
    pub trusted_proxies: Vec<IpNet>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &redact_url(&self.database_url))
            .field("secret_key_file", &self.secret_key_file)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish()
    }
}

/// A database URL with its password replaced, for logs and `check-config`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((credentials, host)) = rest.split_once('@') else { return url.to_owned() };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:[redacted]@{host}"),
        None => url.to_owned(),
    }
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
        Ok(Config {
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
}
