//! The `patgate` command.

mod client;
mod config;
mod serve;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use patgate_core::{
    Resources,
    catalog::{Catalog, render_coverage, render_permissions_markdown},
};

/// patgate: fine-grained personal access tokens.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct WithConnection<C: clap::Subcommand> {
    #[command(flatten)]
    connection: client::Connection,
    #[command(subcommand)]
    command: C,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: decision API, forward auth, management API.
    Serve(serve::ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate(config::Overrides),
    /// Load and check the configuration, print the effective values (secrets redacted).
    CheckConfig(config::Overrides),
    /// Manage tokens on a running server (token in PATGATE_TOKEN).
    Token(WithConnection<client::TokenCommand>),
    /// Explain what the server decides for a request with the token in PATGATE_TOKEN.
    Decide {
        #[command(flatten)]
        connection: client::Connection,
        #[command(flatten)]
        args: client::DecideArgs,
    },
    /// Administer a running server (token in PATGATE_TOKEN).
    Admin(WithConnection<client::AdminCommand>),
    /// The endpoint catalog: generated reference and coverage.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
}

#[derive(Debug, Subcommand)]
enum CatalogCommand {
    /// Print the permission reference (docs/permissions.md) generated from the catalog.
    Docs {
        /// Compare with this file instead of printing; exit 1 when it differs.
        #[arg(long, value_name = "FILE")]
        check: Option<PathBuf>,
    },
    /// Print totals per resource and boundary, and permissions no endpoint uses.
    Coverage,
}

/// The glibc tunable that backs malloc's memory with transparent huge pages. The index is
/// hundreds of MiB read at random: with 4 KiB pages most decisions pay several TLB misses
/// (docs/performance.md: median 1.3 µs → 0.86 µs with 1M tokens).
const HUGE_PAGES_TUNABLE: &str = "glibc.malloc.hugetlb=1";

/// `patgate serve` re-executes itself once with the tunable set, unless it is already set or
/// `PATGATE_HUGE_PAGES=off`. Returns only if it did not re-execute.
fn enable_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        let off = std::env::var("PATGATE_HUGE_PAGES").is_ok_and(|value| value == "off" || value == "0");
        if off || tunables.contains("glibc.malloc.hugetlb") {
            return;
        }
        let Ok(executable) = std::env::current_exe() else { return };
        let tunables = if tunables.is_empty() {
            HUGE_PAGES_TUNABLE.to_owned()
        } else {
            format!("{tunables}:{HUGE_PAGES_TUNABLE}")
        };
        // `exec` only returns on failure; then run on as we are.
        let error = std::process::Command::new(executable)
            .args(std::env::args_os().skip(1))
            .env("GLIBC_TUNABLES", tunables)
            .exec();
        eprintln!("patgate: running without huge pages ({error})");
    }
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|command| command == "serve") {
        enable_huge_pages();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PATGATE_LOG").unwrap_or_else(|_| "patgate=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("patgate: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            runtime()?.block_on(serve::serve(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate(args) => {
            runtime()?.block_on(serve::migrate(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig(overrides) => {
            let config = serve::check_config(overrides)?;
            print(&format!("{config:#?}\nconfiguration OK\n"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(WithConnection { connection, command }) => client::token(&connection, command),
        Command::Decide { connection, args } => client::decide(&connection, args),
        Command::Admin(WithConnection { connection, command }) => client::admin(&connection, command),
        Command::Catalog { command } => {
            let resources = Resources::builtin().context("loading the resource table")?;
            let catalog = Catalog::builtin(&resources).context("loading the endpoint catalog")?;
            match command {
                CatalogCommand::Docs { check: None } => {
                    print(&render_permissions_markdown(&catalog, &resources));
                    Ok(ExitCode::SUCCESS)
                }
                CatalogCommand::Docs { check: Some(path) } => {
                    let committed =
                        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                    if committed == render_permissions_markdown(&catalog, &resources) {
                        Ok(ExitCode::SUCCESS)
                    } else {
                        eprintln!(
                            "patgate: {} differs from the catalog; regenerate it with `patgate catalog docs > {}`",
                            path.display(),
                            path.display()
                        );
                        Ok(ExitCode::FAILURE)
                    }
                }
                CatalogCommand::Coverage => {
                    print(&render_coverage(&catalog, &resources));
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

#[expect(clippy::print_stdout, reason = "the CLI's output is its result")]
fn print(text: &str) {
    print!("{text}");
}
