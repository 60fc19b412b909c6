//! `tessera user`: accounts, for operators. Reads the same configuration as `serve`. This is how
//! the first admin is made: there is no default account and no default password.

use std::io::{BufRead, IsTerminal};

use anyhow::Context;
use clap::Subcommand;
use tessera_core::Password;

use crate::app::App;
use crate::config::Config;

#[derive(Subcommand)]
pub(crate) enum UserCommand {
    /// Create an account. The password is read from standard input (one line), so it never shows
    /// in the process list or the shell history: `tessera user add alice --admin < password.txt`.
    Add {
        username: String,
        /// Give the account the admin role.
        #[arg(long)]
        admin: bool,
    },
}

pub(crate) fn run(config: Config, command: UserCommand) -> anyhow::Result<()> {
    let UserCommand::Add { username, admin } = command;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password for {username} (input is shown; prefer a pipe): ");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = Password::new(line.trim_end_matches(['\r', '\n']));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let app = App::build(&config).await?;
            let roles = if admin {
                vec!["admin".to_owned()]
            } else {
                Vec::new()
            };
            let result = app.accounts.create(&username, &password, roles).await;
            app.close().await;
            let user = result.map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", user.id);
            eprintln!(
                "created {}{}",
                user.username,
                if admin { " with the admin role" } else { "" }
            );
            Ok(())
        })
}
