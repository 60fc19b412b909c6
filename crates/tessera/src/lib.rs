//! The Tessera authentication server: its command line ([`cli_main`]), configuration and the
//! wiring of the server's parts. The `tessera` binary is [`cli_main`].
#![forbid(unsafe_code)]

mod app;
mod compare;
mod config;
mod init;
mod keys;
mod serve;
mod tls;
mod user;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides};

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
}

/// The options every command shares: they all read the same configuration.
#[derive(Args)]
struct ConfigArgs {
    /// Configuration file (TOML). Default: ./tessera.toml when it exists.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Database: sqlite://PATH (default sqlite://tessera.db) or memory.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// The URL clients reach this server at (default http://localhost:8080).
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<Config> {
        Config::load(
            self.config.as_deref(),
            &Overrides {
                listen: self.listen,
                database: self.database.clone(),
                public_url: self.public_url.clone(),
            },
        )
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera: {e:#}");
            ExitCode::FAILURE
        }
    }
}
