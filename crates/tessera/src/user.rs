//! `tessera user`: accounts, for operators. Reads the same configuration as `serve`. This is how
//! the first admin is made: there is no default account and no default password.
//!
//! Changes go through the same core services as the admin API, so they are audited (with no
//! admin: the command line acted) and announced on the change feed: running servers apply them at
//! once.

use std::io::{BufRead, IsTerminal};

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;
use tessera_core::{CurrentLogin, Password, User};

use crate::app::{App, find_user, print_json, with_app};
use crate::config::Config;

/// How many accounts `user list` reads from the store at a time.
const PAGE: usize = 200;

#[derive(Subcommand)]
pub(crate) enum UserCommand {
    /// Create an account. The password is read from standard input (one line), so it never shows
    /// in the process list or the shell history: `tessera user add alice --admin < password.txt`.
    Add {
        username: String,
        /// Give the account the admin role.
        #[arg(long)]
        admin: bool,
        /// The account's email address (for recovery mail). It starts unverified; with mail
        /// configured, a verification mail is queued and goes out from the running server.
        #[arg(long, value_name = "ADDRESS")]
        email: Option<String>,
        /// Mark the address verified: you vouch that it is the user's (no mail is sent).
        #[arg(long, requires = "email")]
        email_verified: bool,
    },
    /// Set, change or remove an account's email address (no password, no notice to the old
    /// address). It starts unverified, and gets a verification mail when mail is configured,
    /// unless --verified says you vouch for it.
    Email {
        /// A username or a user id (usr_…).
        user: String,
        /// The new address; omit it with --remove.
        #[arg(required_unless_present = "remove", conflicts_with = "remove")]
        address: Option<String>,
        /// Remove the address.
        #[arg(long)]
        remove: bool,
        /// Mark the address verified: you vouch that it is the user's (no mail is sent).
        #[arg(long, conflicts_with = "remove")]
        verified: bool,
    },
    /// List accounts in username order: all of them, or a page with --after and --limit.
    List {
        /// Start after this username (the last one of the previous page).
        #[arg(long, value_name = "USERNAME")]
        after: Option<String>,
        /// List at most this many accounts (default: all).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one account: roles, whether it is disabled, when it was created, and its live logins.
    Show {
        /// A username or a user id (usr_…).
        user: String,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Disable an account: it cannot log in, and every session, login and token it holds stops
    /// working at once, on every server.
    Disable {
        /// A username or a user id (usr_…).
        user: String,
    },
    /// Enable a disabled account again (its ended logins stay ended).
    Enable {
        /// A username or a user id (usr_…).
        user: String,
    },
    /// Replace an account's roles with the ones given (none: remove every role). Its current
    /// access tokens stop working; its next refresh carries the new roles.
    Roles {
        /// A username or a user id (usr_…).
        user: String,
        /// Role names: 1-32 of letters, digits, - _ . :
        roles: Vec<String>,
    },
    /// Set an account's password, read from standard input (one line). Every login of the
    /// account ends, and its access tokens stop working.
    Passwd {
        /// A username or a user id (usr_…).
        user: String,
    },
    /// Remove an account's second factor (TOTP and its recovery codes), for a user who lost
    /// both: logins need only the password again until they set one up anew. Check who asks
    /// first: it is what someone holding only the password would ask for.
    RemoveTotp {
        /// A username or a user id (usr_…).
        user: String,
    },
    /// Remove every passkey of an account, for a user who lost them: they no longer log in,
    /// nor count as a second factor. Check who asks first: it is what someone holding only the
    /// password would ask for.
    RemovePasskeys {
        /// A username or a user id (usr_…).
        user: String,
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
    match command {
        UserCommand::Add {
            username,
            admin,
            email,
            email_verified,
        } => {
            if email.is_none() && config.accounts.require_verified_email {
                anyhow::bail!(
                    "accounts.require_verified_email is on: give the account an address with \
                     --email (and --email-verified when you vouch for it), or it cannot log in"
                );
            }
            let password = read_password(&format!("password for {username}"))?;
            with_app(&config, async |app| {
                add(
                    app,
                    &username,
                    &password,
                    admin,
                    email.as_deref(),
                    email_verified,
                )
                .await
            })
        }
        UserCommand::Email {
            user,
            address,
            remove: _,
            verified,
        } => with_app(&config, async |app| {
            let found = find_user(app, &user).await?;
            if !app
                .account_mail
                .set_email_by_operator(&found.id, address.as_deref())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
            {
                anyhow::bail!("user {} no longer exists", found.username);
            }
            let user = find_user(app, found.id.as_str()).await?;
            match &user.email {
                None => eprintln!("{}: address removed", user.username),
                Some(_) if verified => {
                    app.account_mail
                        .verify_by_operator(&user)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    eprintln!("{}: address set and marked verified", user.username);
                }
                Some(_) if app.account_mail.mailer().enabled() => {
                    app.account_mail
                        .send_verification(&user, "en", None)
                        .await
                        .map_err(|e| anyhow::anyhow!("queueing the verification mail: {e}"))?;
                    eprintln!(
                        "{}: address set; a verification mail is queued",
                        user.username
                    );
                }
                Some(_) => eprintln!("{}: address set (not verified)", user.username),
            }
            Ok(())
        }),
        UserCommand::List { after, limit, json } => with_app(&config, async |app| {
            list(
                app,
                after,
                limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
                json,
            )
            .await
        }),
        UserCommand::Show { user, json } => with_app(&config, async |app| {
            let user = find_user(app, &user).await?;
            let logins = app.logins.list(&user.id, &CurrentLogin::None).await?;
            let view = UserView::new(&user, Some(logins.len()));
            if json {
                print_json(&view)
            } else {
                view.print_text();
                Ok(())
            }
        }),
        UserCommand::Disable { user } => set_disabled(&config, &user, true),
        UserCommand::Enable { user } => set_disabled(&config, &user, false),
        UserCommand::RemoveTotp { user } => with_app(&config, async |app| {
            let user = find_user(app, &user).await?;
            if app
                .logins
                .second_factors()
                .remove_totp(&user.id, None)
                .await?
            {
                eprintln!(
                    "{}: TOTP removed; the password alone logs in",
                    user.username
                );
                Ok(())
            } else {
                anyhow::bail!("{} has no TOTP set up", user.username)
            }
        }),
        UserCommand::RemovePasskeys { user } => with_app(&config, async |app| {
            let user = find_user(app, &user).await?;
            let removed = app
                .logins
                .second_factors()
                .remove_passkeys(&user.id, None)
                .await?;
            if removed == 0 {
                anyhow::bail!("{} has no passkey", user.username)
            }
            let still = if app.logins.second_factors().required(&user.id).await? {
                "TOTP is still required at login"
            } else {
                "the password alone logs in"
            };
            eprintln!(
                "{}: {removed} passkey{} removed; {still}",
                user.username,
                if removed == 1 { "" } else { "s" }
            );
            Ok(())
        }),
        UserCommand::Roles { user, roles } => with_app(&config, async |app| {
            let user = find_user(app, &user).await?;
            if !app.logins.set_roles(&user.id, &roles, None).await? {
                anyhow::bail!("user {} no longer exists", user.username);
            }
            let user = find_user(app, user.id.as_str()).await?;
            eprintln!("{}: roles now {}", user.username, roles_text(&user.roles));
            Ok(())
        }),
        UserCommand::Passwd { user } => {
            let password = read_password(&format!("new password for {user}"))?;
            with_app(&config, async |app| {
                let user = find_user(app, &user).await?;
                if !app.logins.set_password(&user.id, &password, None).await? {
                    anyhow::bail!("user {} no longer exists", user.username);
                }
                eprintln!(
                    "password of {} set; every login of the account ended",
                    user.username
                );
                Ok(())
            })
        }
        UserCommand::Delete { user, yes } => {
            if !yes && !std::io::stdin().is_terminal() {
                anyhow::bail!(
                    "refusing to delete {user:?} without confirmation: standard input is not a \
                     terminal; pass --yes to delete without asking"
                );
            }
            with_app(&config, async |app| delete(app, &user, yes).await)
        }
    }
}

/// One line of standard input, without its line end. A terminal gets a prompt (the input shows:
/// a pipe is better).
fn read_password(prompt: &str) -> anyhow::Result<Password> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{prompt} (input is shown; prefer a pipe): ");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    Ok(Password::new(line.trim_end_matches(['\r', '\n'])))
}

async fn add(
    app: &App,
    username: &str,
    password: &Password,
    admin: bool,
    email: Option<&str>,
    email_verified: bool,
) -> anyhow::Result<()> {
    let roles = if admin {
        vec!["admin".to_owned()]
    } else {
        Vec::new()
    };
    let user = app
        .accounts
        .create_with_email(username, password, roles, email)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if email_verified {
        app.account_mail
            .verify_by_operator(&user)
            .await
            .map_err(|e| anyhow::anyhow!("marking the address verified: {e}"))?;
    } else if user.email.is_some() && app.account_mail.mailer().enabled() {
        app.account_mail
            .send_verification(&user, "en", None)
            .await
            .map_err(|e| anyhow::anyhow!("queueing the verification mail: {e}"))?;
        eprintln!(
            "a verification mail is queued for {}'s address",
            user.username
        );
    }
    println!("{}", user.id);
    eprintln!(
        "created {}{}",
        user.username,
        if admin { " with the admin role" } else { "" }
    );
    Ok(())
}

async fn list(
    app: &App,
    after: Option<String>,
    limit: Option<usize>,
    json: bool,
) -> anyhow::Result<()> {
    let mut users = Vec::new();
    let mut cursor = after;
    loop {
        let want = limit.map_or(PAGE, |l| (l - users.len()).min(PAGE));
        let page = app.accounts.list(cursor.as_deref(), want).await?;
        let full = page.len() == want;
        cursor = page.last().map(|u| u.username.to_string());
        users.extend(page.iter().map(|u| UserView::new(u, None)));
        if !full || limit.is_some_and(|l| users.len() >= l) {
            break;
        }
    }
    // With a limit, the cursor of the next page: absent when this was the last.
    let next = match limit {
        Some(l) if users.len() == l => cursor,
        _ => None,
    };
    if json {
        return print_json(&UserList { users, next });
    }
    println!(
        "{:<27} {:<24} {:<8} {:<25} ROLES",
        "ID", "USERNAME", "STATUS", "CREATED"
    );
    for u in &users {
        println!(
            "{:<27} {:<24} {:<8} {:<25} {}",
            u.id,
            u.username,
            u.status(),
            u.created_at,
            u.roles.join(",")
        );
    }
    if let Some(next) = next {
        eprintln!("more accounts follow: --after {next}");
    }
    Ok(())
}

fn set_disabled(config: &Config, user: &str, disabled: bool) -> anyhow::Result<()> {
    with_app(config, async |app| {
        let user = find_user(app, user).await?;
        if !app.logins.set_disabled(&user.id, disabled, None).await? {
            anyhow::bail!("user {} no longer exists", user.username);
        }
        if disabled {
            eprintln!(
                "disabled {}: every session, login and token of the account is refused",
                user.username
            );
        } else {
            eprintln!("enabled {}", user.username);
        }
        Ok(())
    })
}

fn roles_text(roles: &[String]) -> String {
    if roles.is_empty() {
        "(none)".to_owned()
    } else {
        roles.join(", ")
    }
}

/// An account as `user list` and `user show` print it (never its password hash).
#[derive(Serialize)]
struct UserView {
    id: String,
    username: String,
    roles: Vec<String>,
    disabled: bool,
    created_at: String,
    updated_at: String,
    /// Logins that began before this instant are void (a password change, a forced logout).
    not_before: String,
    /// The account's address, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    /// Whether the address is verified (absent without an address).
    #[serde(skip_serializing_if = "Option::is_none")]
    email_verified: Option<bool>,
    /// `user show` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    live_logins: Option<usize>,
}

impl UserView {
    fn new(user: &User, live_logins: Option<usize>) -> Self {
        Self {
            id: user.id.to_string(),
            username: user.username.to_string(),
            roles: user.roles.clone(),
            disabled: user.disabled,
            created_at: user.created_at.to_rfc3339(),
            updated_at: user.updated_at.to_rfc3339(),
            not_before: user.not_before.to_rfc3339(),
            email: user.email.as_ref().map(|e| e.address.to_string()),
            email_verified: user.email.as_ref().map(|e| e.verified),
            live_logins,
        }
    }

    fn status(&self) -> &'static str {
        if self.disabled { "disabled" } else { "active" }
    }

    fn print_text(&self) {
        println!("id:          {}", self.id);
        println!("username:    {}", self.username);
        println!("status:      {}", self.status());
        println!("roles:       {}", roles_text(&self.roles));
        println!("created:     {}", self.created_at);
        println!("updated:     {}", self.updated_at);
        println!("not before:  {}", self.not_before);
        if let (Some(email), Some(verified)) = (&self.email, self.email_verified) {
            let state = if verified { "verified" } else { "not verified" };
            println!("email:       {email} ({state})");
        }
        if let Some(n) = self.live_logins {
            println!("live logins: {n} (tessera sessions list {})", self.username);
        }
    }
}

#[derive(Serialize)]
struct UserList {
    users: Vec<UserView>,
    /// Pass as --after for the next page; absent on the last page.
    next: Option<String>,
}

/// `tessera user delete`: the account by id or username, confirmed on a terminal (the username
/// typed again), then deleted.
async fn delete(app: &App, who: &str, yes: bool) -> anyhow::Result<()> {
    let user = find_user(app, who).await?;
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
    if !app.logins.delete_account(&user.id, None).await? {
        anyhow::bail!("no user {who:?}: it was deleted meanwhile");
    }
    println!("{}", user.id);
    eprintln!("deleted {}", user.username);
    Ok(())
}
