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
    /// Delete an account and everything of it: its sessions and their data, its token and hybrid
    /// logins, its roles and password. Every credential of it stops working at once, on running
    /// servers too; the audit log keeps the user id, not the username, and records the deletion.
    /// The username is free to register again. Asks for confirmation on a terminal; give `--yes`
    /// when standard input is not one (scripts).
    Delete {
        /// The account: its username or its id (`usr_…`).
        user: String,
        /// Delete without asking.
        #[arg(long)]
        yes: bool,
    },
}

pub(crate) fn run(config: Config, command: UserCommand) -> anyhow::Result<()> {
    let (username, admin) = match command {
        UserCommand::Add { username, admin } => (username, admin),
        UserCommand::Delete { user, yes } => return delete(config, &user, yes),
    };
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

/// `tessera user delete`: finds the account by id or username, confirms, and deletes it.
fn delete(config: Config, who: &str, yes: bool) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    if !yes && !stdin.is_terminal() {
        anyhow::bail!(
            "refusing to delete {who:?} without confirmation: standard input is not a terminal; \
             pass --yes to delete without asking"
        );
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let app = App::build(&config).await?;
            let result = delete_with(&app, who, yes).await;
            app.close().await;
            result
        })
}

async fn delete_with(app: &App, who: &str, yes: bool) -> anyhow::Result<()> {
    let found = match tessera_core::UserId::parse(who) {
        Some(id) => app.accounts.user(&id).await,
        None => app.accounts.user_by_name(who).await,
    }
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(user) = found else {
        anyhow::bail!("no user {who:?} (give a username or a user id)");
    };
    if !yes {
        eprint!(
            "delete {} ({}) and everything of it? This cannot be undone. Type the username to confirm: ",
            user.username, user.id
        );
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the confirmation from standard input")?;
        let typed = line.trim();
        let same = tessera_core::Username::parse(typed).is_ok_and(|name| name == user.username);
        if !same {
            anyhow::bail!("not deleted: the confirmation did not match the username");
        }
    }
    if !app
        .logins
        .delete_account(&user.id, None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        anyhow::bail!("no user {who:?}: it was deleted meanwhile");
    }
    println!("{}", user.id);
    eprintln!("deleted {}", user.username);
    Ok(())
}
