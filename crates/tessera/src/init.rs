//! `tessera init`: asks the three questions for choosing a login model and writes a commented `tessera.toml` that
//! follows the answers: which login model to use, which stores, which lifetimes.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;

#[derive(Args)]
pub(crate) struct InitArgs {
    /// Where to write the configuration.
    #[arg(long, value_name = "FILE", default_value = "tessera.toml")]
    output: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    force: bool,
}

/// The answers to the three questions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answers {
    /// 1. Must logins be shared across domains or clients (SPA on another origin, mobile app)?
    pub cross_domain: bool,
    /// 2. Several servers or microservices?
    pub many_nodes: bool,
    /// 3. High security needs (bank, enterprise)?
    pub high_security: bool,
}

const QUESTIONS: [&str; 3] = [
    "1. Must the login be shared across domains or clients (an SPA on another origin, a mobile app, other services)?",
    "2. Will several servers or microservices share it?",
    "3. Are the security needs high (a bank, an enterprise system)?",
];

pub(crate) fn run(args: InitArgs) -> anyhow::Result<()> {
    if args.output.exists() && !args.force {
        bail!(
            "{} exists; pass --force to replace it",
            args.output.display()
        );
    }
    let answers = ask(&mut std::io::stdin().lock(), std::io::stdin().is_terminal())?;
    let toml = render(answers);
    write(&args.output, &toml)?;
    eprintln!(
        "wrote {} — recommended model: {}; start with `tessera serve --config {}`",
        args.output.display(),
        model(answers),
        args.output.display()
    );
    Ok(())
}

/// Reads three yes/no answers, one per line (`y`, `yes`, `n`, `no`; case does not matter).
pub(crate) fn ask(input: &mut impl BufRead, interactive: bool) -> anyhow::Result<Answers> {
    let mut answers = [false; 3];
    for (i, question) in QUESTIONS.iter().enumerate() {
        loop {
            if interactive {
                eprint!("{question} [y/n] ");
                std::io::stderr().flush().ok();
            }
            let mut line = String::new();
            if input.read_line(&mut line).context("reading an answer")? == 0 {
                bail!("no answer to question {} (expected y or n)", i + 1);
            }
            match line.trim().to_ascii_lowercase().as_str() {
                "y" | "yes" => answers[i] = true,
                "n" | "no" => answers[i] = false,
                other if interactive => {
                    eprintln!("please answer y or n (not {other:?})");
                    continue;
                }
                other => bail!("answer {} must be y or n, not {other:?}", i + 1),
            }
            break;
        }
    }
    Ok(Answers {
        cross_domain: answers[0],
        many_nodes: answers[1],
        high_security: answers[2],
    })
}

/// The advice that follows from the answers, in one line.
pub(crate) fn model(a: Answers) -> &'static str {
    match (a.cross_domain, a.high_security) {
        (true, true) => "token for other clients and domains, hybrid for your own browser app",
        (true, false) => "token (Authorization: Bearer, refresh tokens)",
        (false, true) => "session (server state, HttpOnly cookie, CSRF token)",
        (false, false) => "session, or hybrid if an SPA on this site calls other services",
    }
}

/// The configuration file for the answers, with the reasons as comments.
pub(crate) fn render(a: Answers) -> String {
    let mut out = String::new();
    let mut line = |s: &str| {
        out.push_str(s);
        out.push('\n');
    };
    line("# Tessera configuration, written by `tessera init` from three questions:");
    line(&format!(
        "#   cross-domain or many clients: {}",
        yes_no(a.cross_domain)
    ));
    line(&format!(
        "#   several servers:              {}",
        yes_no(a.many_nodes)
    ));
    line(&format!(
        "#   high security needs:          {}",
        yes_no(a.high_security)
    ));
    line(&format!("# Recommended login model: {}.", model(a)));
    line(
        "# Every value can also come from the environment (TESSERA_…, `__` for nesting) or flags.",
    );
    line("");
    line("# The URL clients reach this server at. Use https outside localhost: browsers keep the");
    line("# Secure cookies only there.");
    line("public_url = \"https://auth.example.com\"");
    line("listen = \"127.0.0.1:8080\"");
    line("");
    if a.many_nodes {
        line("# Several servers share PostgreSQL (users, keys, logins, audit log) and Redis");
        line(
            "# (sessions, revocations, login budgets, the change feed). Every node needs the same",
        );
        line("# master key: set TESSERA_TOKENS__MASTER_KEY (32 bytes, base64) on each.");
        line("database = \"postgres://tessera@db.internal/tessera\"");
        line("");
        line("[redis]");
        line("url = \"redis://cache.internal:6379\"");
        line("prefix = \"tessera:\"");
    } else {
        line("# One server: everything in one SQLite file, nothing to install.");
        line("database = \"sqlite://tessera.db\"");
    }
    line("");
    line("[sessions]");
    if a.many_nodes {
        line("store = \"redis\"");
    }
    if a.high_security {
        line("# High security: short sessions.");
        line("idle_timeout = \"15m\"");
        line("absolute_lifetime = \"8h\"");
    } else {
        line("idle_timeout = \"30m\"");
        line("absolute_lifetime = \"12h\"");
    }
    line("");
    line("[tokens]");
    if a.high_security {
        line("# High security: short access tokens, and only live ones accepted (allowlist:");
        line("# stateful tokens, every revocation immediate).");
        line("access_lifetime = \"5m\"");
        line("revocation = \"allowlist\"");
        line("refresh_absolute_lifetime = \"7d\"");
        line("refresh_idle_lifetime = \"1d\"");
    } else {
        line("access_lifetime = \"10m\"");
        line("revocation = \"denylist\"");
    }
    line("");
    line("[http]");
    if a.cross_domain {
        line("# Your other origins (an SPA, an admin app): allowed to call with credentials.");
        line("trusted_origins = [\"https://app.example.com\"]");
    } else {
        line("trusted_origins = []");
    }
    line("# Put the addresses of your reverse proxies here so the client address is believed.");
    line("trusted_proxies = []");
    line("");
    line("[accounts]");
    if a.high_security {
        line("# High security: accounts are made by admins (`tessera user add`), not by anyone.");
        line("registration = \"closed\"");
    } else {
        line("registration = \"open\"");
    }
    out
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn write(path: &Path, content: &str) -> anyhow::Result<()> {
    std::fs::write(path, content).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_one_per_line() {
        let a = ask(&mut "y\nNo\nYES\n".as_bytes(), false).unwrap();
        assert_eq!(
            a,
            Answers {
                cross_domain: true,
                many_nodes: false,
                high_security: true
            }
        );
        assert!(ask(&mut "y\nmaybe\ny\n".as_bytes(), false).is_err());
        assert!(ask(&mut "y\n".as_bytes(), false).is_err());
    }

    #[test]
    fn every_combination_is_a_valid_configuration() {
        for bits in 0..8u8 {
            let answers = Answers {
                cross_domain: bits & 1 != 0,
                many_nodes: bits & 2 != 0,
                high_security: bits & 4 != 0,
            };
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("tessera.toml");
            std::fs::write(&file, render(answers)).unwrap();
            let config = crate::config::Config::load(Some(&file), &Default::default())
                .unwrap_or_else(|e| panic!("{answers:?}: {e:#}"));
            assert_eq!(
                config.sessions.store == crate::config::SessionStoreKind::Redis,
                answers.many_nodes
            );
            assert_eq!(
                config.tokens.revocation == tessera_core::token::RevocationMode::Allowlist,
                answers.high_security
            );
        }
    }
}
