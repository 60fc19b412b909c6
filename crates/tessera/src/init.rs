//! `tessera init`: asks the three questions for choosing a login model and writes a commented `tessera.toml` that
//! follows the answers: which login model to use, which stores, which lifetimes.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;

#[derive(Args)]
#[command(after_help = "\
Without flags, init asks the three questions on the terminal (or reads one answer per line from \
standard input). Flags answer them for scripts; with --yes, a question no flag answers takes its \
default (no, 1, no: one server on the embedded store, the session model). \
How the answers lead to a model: docs/choosing.md.")]
pub(crate) struct InitArgs {
    /// Where to write the configuration.
    #[arg(long, value_name = "FILE", default_value = "tessera.toml")]
    output: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    force: bool,
    /// Question 1: must the login be shared across domains or clients (an SPA on another origin,
    /// a mobile app, other services)?
    #[arg(long, value_name = "yes|no", value_parser = parse_yes_no)]
    cross_domain: Option<bool>,
    /// Question 2: how many servers will share it? More than one writes the PostgreSQL and Redis
    /// settings.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    nodes: Option<u16>,
    /// Question 3: are the security needs high (a bank, an enterprise system)?
    #[arg(long, value_name = "yes|no", value_parser = parse_yes_no)]
    high_security: Option<bool>,
    /// Do not ask: every question not answered by a flag takes its default.
    #[arg(long, short = 'y')]
    yes: bool,
}

/// The answers to the three questions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answers {
    /// 1. Must logins be shared across domains or clients (SPA on another origin, mobile app)?
    pub cross_domain: bool,
    /// 2. How many servers share it (1: one server on the embedded store)?
    pub nodes: u16,
    /// 3. High security needs (bank, enterprise)?
    pub high_security: bool,
}

impl Answers {
    /// The defaults `--yes` takes: one server on the embedded store, the session model.
    pub(crate) const DEFAULT: Self = Self {
        cross_domain: false,
        nodes: 1,
        high_security: false,
    };

    pub(crate) fn many_nodes(self) -> bool {
        self.nodes > 1
    }
}

/// The answers given as flags; `None` where a question is still open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Given {
    pub cross_domain: Option<bool>,
    pub nodes: Option<u16>,
    pub high_security: Option<bool>,
}

const QUESTIONS: [&str; 3] = [
    "1. Must the login be shared across domains or clients (an SPA on another origin, a mobile app, other services)? [y/N]",
    "2. How many servers will share it? (a number, or y for several) [1]",
    "3. Are the security needs high (a bank, an enterprise system)? [y/N]",
];

fn parse_yes_no(text: &str) -> Result<bool, String> {
    yes_no_answer(text).ok_or_else(|| format!("expected yes or no, not {text:?}"))
}

fn yes_no_answer(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Some(true),
        "n" | "no" => Some(false),
        _ => None,
    }
}

/// Question 2's answer: a number of servers, or yes (several) / no (one).
fn nodes_answer(text: &str) -> Option<u16> {
    match yes_no_answer(text) {
        Some(true) => Some(2),
        Some(false) => Some(1),
        None => text.trim().parse().ok().filter(|n| *n >= 1),
    }
}

pub(crate) fn run(args: InitArgs) -> anyhow::Result<()> {
    if args.output.exists() && !args.force {
        bail!(
            "{} exists; pass --force to replace it",
            args.output.display()
        );
    }
    let given = Given {
        cross_domain: args.cross_domain,
        nodes: args.nodes,
        high_security: args.high_security,
    };
    let answers = if args.yes {
        complete_with_defaults(given)
    } else {
        ask(
            &mut std::io::stdin().lock(),
            std::io::stdin().is_terminal(),
            given,
        )?
    };
    let toml = render(answers);
    write(&args.output, &toml)?;
    eprintln!(
        "wrote {} — recommended model: {}",
        args.output.display(),
        model(answers),
    );
    if answers.many_nodes() {
        eprintln!(
            "next: replace the placeholder addresses (database, redis.url, public_url), set the same \
             TESSERA_TOKENS__MASTER_KEY on every server, then `tessera serve --config {}`",
            args.output.display()
        );
    } else {
        eprintln!(
            "next: set public_url, then `tessera serve --config {}`",
            args.output.display()
        );
    }
    Ok(())
}

/// The given answers, with each open question at its default.
pub(crate) fn complete_with_defaults(given: Given) -> Answers {
    let d = Answers::DEFAULT;
    Answers {
        cross_domain: given.cross_domain.unwrap_or(d.cross_domain),
        nodes: given.nodes.unwrap_or(d.nodes),
        high_security: given.high_security.unwrap_or(d.high_security),
    }
}

/// Asks the questions the flags left open, reading one answer per line (`y`, `yes`, `n`, `no`,
/// case does not matter; a number for question 2). On a terminal an empty answer takes the
/// default and a bad one asks again; from a pipe every answer must be given and valid.
pub(crate) fn ask(
    input: &mut impl BufRead,
    interactive: bool,
    given: Given,
) -> anyhow::Result<Answers> {
    let mut answers = complete_with_defaults(given);
    let open = [
        given.cross_domain.is_none(),
        given.nodes.is_none(),
        given.high_security.is_none(),
    ];
    for (i, question) in QUESTIONS.iter().enumerate() {
        if !open[i] {
            continue;
        }
        loop {
            if interactive {
                eprint!("{question} ");
                std::io::stderr().flush().ok();
            }
            let mut line = String::new();
            if input.read_line(&mut line).context("reading an answer")? == 0 {
                bail!(
                    "no answer to question {} (answer on standard input, or pass {}, or --yes for the defaults)",
                    i + 1,
                    [
                        "--cross-domain yes|no",
                        "--nodes N",
                        "--high-security yes|no"
                    ][i]
                );
            }
            let text = line.trim();
            let understood = if text.is_empty() && interactive {
                Some(())
            } else if i == 1 {
                nodes_answer(text).map(|n| answers.nodes = n)
            } else {
                yes_no_answer(text).map(|b| {
                    if i == 0 {
                        answers.cross_domain = b;
                    } else {
                        answers.high_security = b;
                    }
                })
            };
            let expected = if i == 1 {
                "a number of servers, y or n"
            } else {
                "y or n"
            };
            match understood {
                Some(()) => break,
                None if interactive => eprintln!("please answer {expected} (not {text:?})"),
                None => bail!("answer {} must be {expected}, not {text:?}", i + 1),
            }
        }
    }
    Ok(answers)
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
    line(
        "# Tessera configuration, written by `tessera init` from the three questions for choosing a",
    );
    line("# login model (docs/choosing.md explains each model and what it costs):");
    line(&format!(
        "#   cross-domain or many clients: {}",
        yes_no(a.cross_domain)
    ));
    line(&format!("#   servers sharing it:           {}", a.nodes));
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
    if a.many_nodes() {
        line(&format!(
            "# {} servers share PostgreSQL (users, keys, logins, audit log) and Redis (sessions,",
            a.nodes
        ));
        line("# revocations, login budgets, the change feed): run this same file on each of them.");
        line("# Every server needs the same master key, which seals the signing keys: set");
        line(
            "# TESSERA_TOKENS__MASTER_KEY (32 random bytes, base64, e.g. `openssl rand -base64 32`)",
        );
        line("# in each server's environment rather than in this file.");
        line("# PLACEHOLDER: your PostgreSQL (a password belongs in TESSERA_DATABASE, not here).");
        line("database = \"postgres://tessera@db.internal/tessera\"");
        line("");
        line("[postgres]");
        line("# The schema Tessera's tables live in (created when missing).");
        line("schema = \"tessera\"");
        line("");
        line("[redis]");
        line("# PLACEHOLDER: your Redis. Every key starts with the prefix, so one Redis can serve");
        line("# several deployments.");
        line("url = \"redis://cache.internal:6379\"");
        line("prefix = \"tessera:\"");
    } else {
        line("# One server: everything in one SQLite file, nothing to install.");
        line("database = \"sqlite://tessera.db\"");
    }
    line("");
    line("[sessions]");
    if a.many_nodes() {
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
        line("# Sender-constrained tokens (DPoP): clients prove they hold a key with every");
        line("# request, so a copied token or refresh token is useless. Turn on once your");
        line("# clients send DPoP proofs.");
        line("# require_dpop = true");
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
    line("# Second factors (TOTP): a user who set one up uses it again for privileged actions");
    line("# (admin routes, password and email changes) when it is older than this.");
    line("# privileged_max_age = \"10m\"");
    line("# Admin routes need a recent second factor from every admin (who must set one up).");
    line("# admin_requires_second_factor = true");
    line("# second_factor_challenge_lifetime = \"5m\"");
    line("# A login used from a new network and a new browser at once (a copied cookie, most");
    line("# likely) is written to the audit log; \"step_up\" also makes it show a recent second");
    line("# factor (or log in again) before it goes on.");
    if a.high_security {
        line("new_context = \"step_up\"");
    } else {
        line("# new_context = \"step_up\"");
    }
    line("");
    line("# Mail for account recovery and address verification: set the SMTP server to turn them");
    line("# on (the password is best given as TESSERA_EMAIL__SMTP_PASSWORD).");
    line("# [email]");
    line("# smtp_url = \"smtp://mailer@smtp.example.com:587\"");
    line("# from = \"Example <no-reply@example.com>\"");
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
        let a = ask(&mut "y\nNo\nYES\n".as_bytes(), false, Given::default()).unwrap();
        assert_eq!(
            a,
            Answers {
                cross_domain: true,
                nodes: 1,
                high_security: true
            }
        );
        assert!(ask(&mut "y\nmaybe\ny\n".as_bytes(), false, Given::default()).is_err());
        assert!(ask(&mut "y\n".as_bytes(), false, Given::default()).is_err());
        // From a pipe an empty answer is no answer.
        assert!(ask(&mut "\n\n\n".as_bytes(), false, Given::default()).is_err());
    }

    #[test]
    fn question_two_takes_a_number_or_yes_or_no() {
        let two = |answer: &str| {
            ask(
                &mut format!("n\n{answer}\nn\n").as_bytes(),
                false,
                Given::default(),
            )
            .map(|a| a.nodes)
            .ok()
        };
        assert_eq!(two("3"), Some(3));
        assert_eq!(two("yes"), Some(2));
        assert_eq!(two("N"), Some(1));
        assert_eq!(two("0"), None);
        assert_eq!(two("-2"), None);
        assert_eq!(two("many"), None);
    }

    #[test]
    fn flags_leave_only_the_open_questions_to_ask() {
        let given = Given {
            cross_domain: Some(true),
            nodes: None,
            high_security: Some(false),
        };
        // One line answers the one open question.
        let a = ask(&mut "4\n".as_bytes(), false, given).unwrap();
        assert_eq!(
            a,
            Answers {
                cross_domain: true,
                nodes: 4,
                high_security: false
            }
        );
        assert_eq!(complete_with_defaults(given).nodes, 1);
        assert_eq!(complete_with_defaults(Given::default()), Answers::DEFAULT);
        // On a terminal an empty answer is the default, a bad one is asked again.
        let a = ask(&mut "\nwhat\n\n\n".as_bytes(), true, Given::default()).unwrap();
        assert_eq!(a, Answers::DEFAULT);
    }

    #[test]
    fn every_combination_is_a_valid_configuration() {
        for bits in 0..8u8 {
            let answers = Answers {
                cross_domain: bits & 1 != 0,
                nodes: if bits & 2 != 0 { 3 } else { 1 },
                high_security: bits & 4 != 0,
            };
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("tessera.toml");
            std::fs::write(&file, render(answers)).unwrap();
            let config = crate::config::Config::load(Some(&file), &Default::default())
                .unwrap_or_else(|e| panic!("{answers:?}: {e:#}"));
            assert_eq!(
                config.sessions.store == crate::config::SessionStoreKind::Redis,
                answers.many_nodes()
            );
            assert_eq!(
                config.tokens.revocation == tessera_core::token::RevocationMode::Allowlist,
                answers.high_security
            );
        }
    }
}
