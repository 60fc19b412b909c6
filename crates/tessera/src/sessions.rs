//! `tessera sessions`: a user's logins in every model (server sessions, token and hybrid logins),
//! listed and ended, for operators. Reads the same configuration as `serve`; what it ends is
//! refused by running servers at once (the change feed tells them).

use clap::Subcommand;
use serde::Serialize;
use tessera_core::{CurrentLogin, LoginInfo};

use crate::app::{find_user, print_json, with_app};
use crate::config::Config;

#[derive(Subcommand)]
pub(crate) enum SessionsCommand {
    /// List a user's live logins, oldest first: sessions (ses_…) and token or hybrid logins
    /// (fam_…).
    List {
        /// A username or a user id (usr_…).
        user: String,
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// End logins: every login of a user (a username or usr_…), or one login by its id (ses_… or
    /// fam_…, from `tessera sessions list`). Access tokens of what ended are refused at once.
    Revoke {
        /// A username, a user id (usr_…), or a login id (ses_… or fam_…).
        target: String,
    },
}

pub(crate) fn run(config: Config, command: SessionsCommand) -> anyhow::Result<()> {
    match command {
        SessionsCommand::List { user, json } => with_app(&config, async |app| {
            let user = find_user(app, &user).await?;
            let logins = app.logins.list(&user.id, &CurrentLogin::None).await?;
            let logins: Vec<LoginView> = logins.into_iter().map(LoginView::from).collect();
            if json {
                return print_json(&LoginList {
                    user_id: user.id.to_string(),
                    username: user.username.to_string(),
                    logins,
                });
            }
            println!(
                "{:<27} {:<7} {:<25} {:<25} {:<25} {:<15} USER AGENT",
                "ID", "MODEL", "CREATED", "LAST SEEN", "EXPIRES", "IP"
            );
            for l in &logins {
                println!(
                    "{:<27} {:<7} {:<25} {:<25} {:<25} {:<15} {}",
                    l.id,
                    l.model,
                    l.created_at,
                    l.last_seen_at,
                    l.expires_at,
                    l.ip.as_deref().unwrap_or("-"),
                    // Client-supplied text: no control character reaches the terminal.
                    l.user_agent
                        .as_deref()
                        .unwrap_or("-")
                        .replace(char::is_control, "?")
                );
            }
            Ok(())
        }),
        SessionsCommand::Revoke { target } => with_app(&config, async |app| {
            if target.starts_with("ses_") || target.starts_with("fam_") {
                let Some(owner) = app
                    .logins
                    .end_by_id(&target, "ended by an operator")
                    .await?
                else {
                    anyhow::bail!("no live login {target:?} (see `tessera sessions list USER`)");
                };
                eprintln!("ended login {target} of {owner}");
                return Ok(());
            }
            let user = find_user(app, &target).await?;
            let ended = app.logins.force_logout(&user.id, None).await?;
            eprintln!(
                "ended {ended} login(s) of {}; every access token issued to it until now is refused",
                user.username
            );
            Ok(())
        }),
    }
}

/// One login as `sessions list` prints it: public ids only, never a credential.
#[derive(Serialize)]
struct LoginView {
    /// `ses_…` for a session, `fam_…` for a token or hybrid login.
    id: String,
    /// `session`, `token` or `hybrid`.
    model: &'static str,
    created_at: String,
    last_seen_at: String,
    expires_at: String,
    user_agent: Option<String>,
    ip: Option<String>,
}

impl From<LoginInfo> for LoginView {
    fn from(l: LoginInfo) -> Self {
        Self {
            id: l.id,
            model: l.model.as_str(),
            created_at: l.created_at.to_rfc3339(),
            last_seen_at: l.last_seen_at.to_rfc3339(),
            expires_at: l.expires_at.to_rfc3339(),
            user_agent: l.user_agent,
            ip: l.ip,
        }
    }
}

#[derive(Serialize)]
struct LoginList {
    user_id: String,
    username: String,
    logins: Vec<LoginView>,
}
