//! `tessera compare`: the comparison of the login models, measured on this machine with a
//! throwaway in-memory server: what a login costs, what the per-request check costs, how big the
//! credential is, and what logout or revocation does to a credential already handed out.

use std::time::{Duration, Instant};

use clap::Args;
use tessera_core::token::RevocationMode;
use tessera_core::{ClientInfo, LoginModel, Password, SessionId};

use crate::app::App;
use crate::config::Config;

#[derive(Args)]
pub(crate) struct CompareArgs {
    /// How many times each per-request check runs.
    #[arg(long, default_value_t = 20_000)]
    requests: u32,
}

/// One measured row.
struct Row {
    what: &'static str,
    session: String,
    token: String,
    hybrid: String,
}

pub(crate) fn run(args: CompareArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(compare(args.requests.max(100)))
}

fn per_op(total: Duration, n: u32) -> String {
    let ns = total.as_nanos() / u128::from(n);
    if ns >= 10_000 {
        format!("{:.1} µs", ns as f64 / 1000.0)
    } else {
        format!("{ns} ns")
    }
}

async fn compare(n: u32) -> anyhow::Result<()> {
    let config = Config {
        database: "memory".into(),
        ..Config::default()
    };
    let app = App::build(&config).await?;
    let user = app
        .accounts
        .create("compare", &Password::new("a throwaway passphrase"), vec![])
        .await?;

    // A login, past the password check (the same argon2 work for every model).
    let started = Instant::now();
    let mut last_session = None;
    for _ in 0..100 {
        last_session = Some(app.sessions.start(&user, ClientInfo::default()).await?);
    }
    let session_login = per_op(started.elapsed(), 100);
    let started = Instant::now();
    let mut last_pair = None;
    for _ in 0..100 {
        last_pair = Some(
            app.tokens
                .issue(&user, LoginModel::Token, ClientInfo::default())
                .await?,
        );
    }
    let token_login = per_op(started.elapsed(), 100);
    let (secret, _) = last_session.expect("100 sessions");
    let pair = last_pair.expect("100 pairs");

    // The per-request check.
    app.sessions.find(&secret).await?;
    let started = Instant::now();
    for _ in 0..n {
        app.sessions.find(&secret).await?;
    }
    let session_check = per_op(started.elapsed(), n);
    app.tokens.verify(&pair.access_token).ok();
    let started = Instant::now();
    for _ in 0..n {
        let _ = app.tokens.verify(&pair.access_token);
    }
    let token_cached = per_op(started.elapsed(), n);
    let mut fresh = Vec::new();
    for _ in 0..200 {
        fresh.push(
            app.tokens
                .issue(&user, LoginModel::Token, ClientInfo::default())
                .await?
                .access_token,
        );
    }
    let started = Instant::now();
    for token in &fresh {
        let _ = app.tokens.verify(token);
    }
    let token_cold = per_op(started.elapsed(), 200);

    // What logout does to a credential already out.
    let (doomed, session) = app.sessions.start(&user, ClientInfo::default()).await?;
    app.sessions.end(&session.handle).await?;
    let session_after = if app.sessions.find(&doomed).await?.is_none() {
        "refused at once (server state deleted)"
    } else {
        "STILL ACCEPTED"
    };
    let revoked = app
        .tokens
        .issue(&user, LoginModel::Token, ClientInfo::default())
        .await?;
    app.tokens
        .revoke(&revoked.access_token, Some("access_token"))
        .await?;
    let token_after = if app.tokens.verify(&revoked.access_token).is_err() {
        "refused at once (denylist, memory lookup)"
    } else {
        "STILL ACCEPTED"
    };
    let stateless = {
        let config = Config {
            database: "memory".into(),
            tokens: crate::config::TokensSection {
                revocation: RevocationMode::None,
                ..crate::config::TokensSection::default()
            },
            ..Config::default()
        };
        let plain = App::build(&config).await?;
        let u = plain
            .accounts
            .create("compare", &Password::new("a throwaway passphrase"), vec![])
            .await?;
        let p = plain
            .tokens
            .issue(&u, LoginModel::Token, ClientInfo::default())
            .await?;
        plain
            .tokens
            .revoke(&p.access_token, Some("access_token"))
            .await?;
        if plain.tokens.verify(&p.access_token).is_ok() {
            format!(
                "with revocation = \"none\": accepted until it expires ({} s)",
                p.expires_in
            )
        } else {
            "with revocation = \"none\": refused".to_owned()
        }
    };

    let rows = [
        Row {
            what: "login (after the password check)",
            session: session_login,
            token: token_login.clone(),
            hybrid: token_login,
        },
        Row {
            what: "per-request check",
            session: format!("{session_check} (near cache)"),
            token: format!("{token_cached} cached, {token_cold} first time"),
            hybrid: format!("{token_cached} cached, {token_cold} first time"),
        },
        Row {
            what: "credential sent with each request",
            session: format!("{} B cookie", SessionId::generate()?.encode().len()),
            token: format!("{} B header", pair.access_token.len()),
            hybrid: format!("{} B cookie", pair.access_token.len()),
        },
        Row {
            what: "readable by injected script",
            session: "no (HttpOnly)".into(),
            token: "yes (the app holds it)".into(),
            hybrid: "no (HttpOnly)".into(),
        },
        Row {
            what: "needs a CSRF token",
            session: "yes".into(),
            token: "no".into(),
            hybrid: "yes".into(),
        },
        Row {
            what: "after logout / revocation",
            session: session_after.into(),
            token: format!("{token_after}; {stateless}"),
            hybrid: token_after.into(),
        },
    ];
    println!("Session vs token vs hybrid, measured here ({n} checks each, in-memory store):\n");
    for row in rows {
        println!("{}", row.what);
        println!("  session  {}", row.session);
        println!("  token    {}", row.token);
        println!("  hybrid   {}", row.hybrid);
    }
    Ok(())
}
