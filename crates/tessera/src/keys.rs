//! `tessera keys`: the signing keys, for operators. Reads the same configuration as `serve`.

use clap::Subcommand;

use crate::app::App;
use crate::config::Config;

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// List the signing keys.
    List,
    /// Create a new signing key; the old one verifies its tokens until they expire.
    Rotate,
    /// Retire a key: every token it signed stops working at once.
    Retire {
        /// The key id (from `tessera keys list`).
        kid: String,
    },
}

pub(crate) fn run(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let app = App::build(&config).await?;
            let result = execute(&app, command).await;
            app.close().await;
            result
        })
}

async fn execute(app: &App, command: KeysCommand) -> anyhow::Result<()> {
    let tokens = &app.tokens;
    match command {
        KeysCommand::List => {
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
                "rotated: new tokens are signed with {} ({}); running servers pick it up within sessions.sweep_interval",
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
            eprintln!("retired {kid}: tokens it signed are refused once servers reload their keys");
        }
    }
    Ok(())
}
