//! `tessera backup FILE`: a consistent copy of the SQLite database, made while servers keep
//! running. PostgreSQL has its own tool for that (pg_dump): the command says how to use it, and
//! exits with status 1, since it wrote no file.

use std::path::Path;

use anyhow::Context;
use tessera_store::SqliteStore;

use crate::config::{Config, Database};

pub(crate) fn run(config: &Config, file: &Path) -> anyhow::Result<()> {
    match config.database().map_err(anyhow::Error::msg)? {
        Database::Sqlite(path) => {
            if !path.is_file() {
                anyhow::bail!("there is no database at {} to back up", path.display());
            }
            if file.exists() || file.is_symlink() {
                anyhow::bail!(
                    "{} exists; a backup never overwrites a file",
                    file.display()
                );
            }
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(async {
                    let store = SqliteStore::open(&path)
                        .await
                        .with_context(|| format!("opening {}", path.display()))?;
                    let copied = store.backup_into(file).await;
                    store.close().await;
                    copied.with_context(|| {
                        format!("copying {} to {}", path.display(), file.display())
                    })
                })?;
            eprintln!("copied {} to {}", path.display(), file.display());
            master_key_reminder(config);
            Ok(())
        }
        Database::Postgres(url) => {
            let schema = config
                .postgres
                .schema
                .as_deref()
                .map(|s| format!(" --schema={}", shell_quoted(s)))
                .unwrap_or_default();
            eprintln!(
                "tessera backup copies SQLite databases only. Back up PostgreSQL with pg_dump, \
                 which takes a consistent snapshot while servers keep running:\n\n  \
                 pg_dump --format=custom{schema} --file={} {}\n\n\
                 (give the password through PGPASSWORD or ~/.pgpass, not on the command line; \
                 restore with pg_restore)",
                shell_quoted(&file.display().to_string()),
                shell_quoted(&crate::config_check::url_without_password(&url)),
            );
            master_key_reminder(config);
            anyhow::bail!("no backup was written: the database is PostgreSQL")
        }
        Database::Memory => {
            anyhow::bail!("database = memory keeps nothing on disk: there is nothing to back up")
        }
    }
}

/// `text` as one word for a POSIX shell: in single quotes, each `'` in it written `'\''`, so
/// the printed command can be pasted as it is.
fn shell_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The signing keys in the copy are sealed with the master key: without it, they are useless.
fn master_key_reminder(config: &Config) {
    if config.tokens.master_key.is_some() {
        eprintln!(
            "remember the master key (tokens.master_key): the signing keys in the backup cannot be \
             used without it"
        );
    } else {
        eprintln!(
            "back up the master key file {} too (once is enough; keep it apart from the \
             database backups): the signing keys in the backup cannot be used without it",
            config.tokens.master_key_file.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_keeps_one_word() {
        assert_eq!(shell_quoted("/tmp/x; touch y"), "'/tmp/x; touch y'");
        assert_eq!(shell_quoted("te'st"), r"'te'\''st'");
    }
}
