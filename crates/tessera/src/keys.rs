//! `tessera keys`: the signing keys, for operators. Reads the same configuration as `serve`.

use clap::Subcommand;
use serde::Serialize;
use tessera_core::Timestamp;

use crate::app::{App, print_json, with_app};
use crate::config::Config;

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// List the signing keys (never their private parts).
    List {
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create a new signing key; the old one verifies its tokens until they expire.
    Rotate,
    /// Retire a key: every token it signed stops working at once.
    Retire {
        /// The key id (from `tessera keys list`).
        kid: String,
    },
}

pub(crate) fn run(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    with_app(&config, async |app| execute(app, command).await)
}

/// A key as `keys list --json` prints it.
#[derive(Serialize)]
struct KeyView {
    kid: String,
    algorithm: &'static str,
    /// `active`, `rotated` or `retired`.
    status: &'static str,
    /// In the JWKS, verifying tokens.
    published: bool,
    /// Signing new tokens.
    signing: bool,
    created_at: String,
    rotated_at: Option<String>,
    retired_at: Option<String>,
}

async fn execute(app: &App, command: KeysCommand) -> anyhow::Result<()> {
    let tokens = &app.tokens;
    match command {
        KeysCommand::List { json: true } => {
            let keys: Vec<KeyView> = tokens
                .keyring()
                .list()
                .await?
                .into_iter()
                .map(|k| KeyView {
                    kid: k.kid,
                    algorithm: k.algorithm.as_str(),
                    status: k.status.as_str(),
                    published: k.published,
                    signing: k.signing,
                    created_at: k.created_at.to_rfc3339(),
                    rotated_at: k.rotated_at.map(Timestamp::to_rfc3339),
                    retired_at: k.retired_at.map(Timestamp::to_rfc3339),
                })
                .collect();
            print_json(&serde_json::json!({ "keys": keys }))?;
        }
        KeysCommand::List { json: false } => {
            println!(
                "{:<26} {:<6} {:<8} {:<9} {:<7} CREATED",
                "KID", "ALG", "STATUS", "PUBLISHED", "SIGNING"
            );
            for k in tokens.keyring().list().await? {
                println!(
                    "{:<26} {:<6} {:<8} {:<9} {:<7} {}",
                    k.kid,
                    k.algorithm.as_str(),
                    k.status.as_str(),
                    if k.published { "yes" } else { "no" },
                    if k.signing { "yes" } else { "no" },
                    k.created_at.to_rfc3339()
                );
            }
        }
        KeysCommand::Rotate => {
            let key = tokens.rotate_key(None).await?;
            println!("{}", key.kid);
            eprintln!(
                "rotated: new tokens are signed with {} ({}); running servers use it at once",
                key.kid,
                key.algorithm.as_str()
            );
        }
        KeysCommand::Retire { kid } => {
            if !tokens.retire_key(&kid, None).await? {
                anyhow::bail!(
                    "no key {kid:?} that is not retired already (see `tessera keys list`)"
                );
            }
            eprintln!("retired {kid}: running servers refuse the tokens it signed at once");
        }
    }
    Ok(())
}
