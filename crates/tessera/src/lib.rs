//! Tessera: session, token and hybrid login from one server, or inside your own axum
//! application.
//!
//! [`Tessera`] builds everything (stores, services, background tasks, routes) in a few lines;
//! the `tessera` binary ([`cli_main`]) is built on the same builder. Protect the application's
//! own routes with the extractors of [`tessera_http::extract`]:
//!
//! ```
//! use axum::{Router, routing::get};
//! use tessera::Tessera;
//! use tessera_http::extract::{Admin, AuthUser, RequireRole};
//!
//! async fn home(user: Option<AuthUser>) -> String {
//!     match user {
//!         Some(user) => format!("hello {}", user.user.username),
//!         None => "hello, stranger".into(),
//!     }
//! }
//!
//! async fn admin(_: RequireRole<Admin>) -> &'static str {
//!     "for admins"
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tessera = Tessera::builder().memory().mount("/auth").build().await?;
//! let app: Router = Router::new()
//!     .route("/", get(home))
//!     .route("/admin", get(admin))
//!     .merge(tessera.router())
//!     .with_state(tessera.state());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! // Until the signal (here: at once), then a graceful stop; then Tessera's tasks stop too.
//! tessera.serve(listener, app, async {}).await?;
//! tessera.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod app;
mod backup;
mod compare;
mod config;
mod config_check;
mod embed;
mod init;
mod keys;
mod logging;
mod mail;
mod serve;
mod sessions;
mod tls;
mod user;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::config::{Config, Overrides};

pub use embed::{BuildError, Tessera, TesseraBuilder};

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Session, token and hybrid login from one server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ConfigArgs),
    /// Ask the three questions for choosing a login model and write a commented tessera.toml.
    Init(init::InitArgs),
    /// Measure the comparison of the login models on this machine.
    Compare(compare::CompareArgs),
    /// Manage accounts (the first admin, for one).
    User {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// Manage the signing keys.
    Keys {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// List and end a user's logins in every model (sessions, token and hybrid logins).
    Sessions {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(subcommand)]
        command: sessions::SessionsCommand,
    },
    /// Check the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print a completion script for a shell: `tessera completions bash > /etc/bash_completion.d/tessera`.
    Completions {
        /// The shell.
        shell: Shell,
    },
    /// Copy the SQLite database, consistently, while servers keep running. (With PostgreSQL,
    /// prints how to back it up with pg_dump and exits with status 1: no file was written.)
    Backup {
        #[command(flatten)]
        config: ConfigArgs,
        /// Where to write the copy: a new file (never overwritten), readable by its owner only.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load the configuration as `serve` does and print every value in force, with where it came
    /// from (default, file, environment variable or flag) and secrets redacted. Exits with status
    /// 1, naming the key and its source, on an invalid value.
    Check {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// The shells `tessera completions` writes a script for.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// The options every command shares: they all read the same configuration. They may come before
/// or after a subcommand (`tessera user --database … list` or `tessera user list --database …`).
#[derive(Args)]
struct ConfigArgs {
    /// Configuration file (TOML). Default: ./tessera.toml when it exists.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR", global = true)]
    listen: Option<SocketAddr>,
    /// Database: sqlite://PATH (default sqlite://tessera.db), postgres://… or memory.
    #[arg(long, value_name = "URL", global = true)]
    database: Option<String>,
    /// The URL clients reach this server at (default http://localhost:8080).
    #[arg(long, value_name = "URL", global = true)]
    public_url: Option<String>,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<Config> {
        Config::load(self.config.as_deref(), &self.overrides())
    }

    fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen,
            database: self.database.clone(),
            public_url: self.public_url.clone(),
        }
    }
}

/// Configuration file text checked as `serve` reads it, without the environment or flags: `Ok`,
/// or the message `serve` would stop with, naming the key and where its value came from.
pub fn check_config(toml: &str) -> Result<(), String> {
    Config::from_toml_str(toml)
        .map(drop)
        .map_err(|e| format!("{e:#}"))
}

/// The `tessera` command: parses the command line, runs the command, and reports an error on
/// standard error with exit status 1.
pub fn cli_main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => args.load().and_then(serve::run),
        Command::Init(args) => init::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Keys { config, command } => config.load().and_then(|c| keys::run(c, command)),
        Command::User { config, command } => config.load().and_then(|c| user::run(c, command)),
        Command::Sessions { config, command } => {
            config.load().and_then(|c| sessions::run(c, command))
        }
        Command::Config {
            command: ConfigCommand::Check { config, json },
        } => config_check::run(config.config.as_deref(), &config.overrides(), json),
        Command::Completions { shell } => {
            completions(shell);
            Ok(())
        }
        Command::Backup { config, file } => config.load().and_then(|c| backup::run(&c, &file)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the completion script for `shell` to standard output.
fn completions(shell: Shell) {
    use clap_complete::Shell as Target;
    let target = match shell {
        Shell::Bash => Target::Bash,
        Shell::Zsh => Target::Zsh,
        Shell::Fish => Target::Fish,
    };
    clap_complete::generate(
        target,
        &mut Cli::command(),
        "tessera",
        &mut std::io::stdout(),
    );
}
