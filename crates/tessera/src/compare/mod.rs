//! `tessera compare`: the three login models measured as a client sees them. Real servers
//! (`tessera serve` child processes of this binary) on loopback: one node on the embedded SQLite
//! store, and three nodes sharing PostgreSQL + Redis when both answer. Over HTTP, for each model:
//! throughput and p99 latency of an authenticated request, bytes on the wire, server memory per
//! live login, login latency, the time from logout to refusal on the same node and on another,
//! and what a credential copied before logout can still do under each `tokens.revocation`.
//!
//! - [`servers`]: starting the nodes, and removing everything they leave;
//! - [`measure`]: the byte-counting HTTP client, the load driver, each model's requests;
//! - [`report`]: the [`report::Report`] and its text, Markdown, JSON and HTML renderings.

mod measure;
mod report;
mod servers;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use measure::{Conn, Login, Model, Summary};
use report::{
    AfterLogout, Bytes, Format, LoginFigures, ModelFigures, Question, Report, RevocationFigures,
    Settings, Setup, ThroughputFigures,
};
use servers::{Backing, Node, Revocation, SqliteNode};

#[derive(Args)]
pub(crate) struct CompareArgs {
    /// How long each throughput run lasts, e.g. 3s or 500ms [default: 3s; --quick: 300ms].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Connections sending requests at once in a throughput run [default: 16; --quick: 4].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=512))]
    connections: Option<u16>,
    /// Logins per model and setup, for the memory and login-latency figures [default: 200;
    /// --quick: 10].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    logins: Option<u32>,
    /// Logouts per model and setup, for the time from logout to refusal [default: 20;
    /// --quick: 3].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000))]
    revocations: Option<u32>,
    /// A short run that checks the tool works (a few seconds); its figures are rough.
    #[arg(long)]
    quick: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Write the report to FILE instead of standard output.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// PostgreSQL for the three-node setup; the run uses a schema of its own and drops it.
    #[arg(
        long,
        value_name = "URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres: String,
    /// Redis for the three-node setup; the run uses a key prefix of its own and deletes its keys.
    #[arg(long, value_name = "URL", default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Measure the one SQLite node only, not the three nodes on PostgreSQL + Redis.
    #[arg(long)]
    single_node: bool,
    /// Names the three nodes' schema (tessera_compare_ID) and key prefix (tessera-compare:ID:)
    /// instead of random digits, so a test can check they are gone: 1 to 32 of a-z and 0-9.
    #[arg(long, value_name = "ID", hide = true, value_parser = parse_run_id)]
    run_id: Option<String>,
    /// Render a report written before with --format json instead of measuring.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["duration", "connections", "logins", "revocations", "quick", "single_node"])]
    from_json: Option<PathBuf>,
}

fn parse_run_id(text: &str) -> Result<String, String> {
    if (1..=32).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        Ok(text.to_owned())
    } else {
        Err("1 to 32 of a-z and 0-9".into())
    }
}

/// `3s`, `500ms`, `1m`, or seconds alone; from 100 ms to 10 minutes.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 3s or 500ms"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" | "min" => number * 60.0,
        other => return Err(format!("unknown unit {other:?}: use ms, s or m")),
    };
    if !(0.1..=600.0).contains(&seconds) {
        return Err("a duration from 100ms to 10m".into());
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// What to measure, from the flags.
struct Plan {
    quick: bool,
    duration: Duration,
    connections: usize,
    logins: usize,
    revocations: usize,
    postgres: String,
    redis: String,
    single_node: bool,
    run_id: Option<String>,
}

impl Plan {
    fn from_args(args: &CompareArgs) -> Self {
        let (duration, connections, logins, revocations) = if args.quick {
            (Duration::from_millis(300), 4, 10, 3)
        } else {
            (Duration::from_secs(3), 16, 200, 20)
        };
        Self {
            quick: args.quick,
            duration: args.duration.unwrap_or(duration),
            connections: args.connections.map_or(connections, usize::from),
            logins: args.logins.map_or(logins, |n| n as usize),
            revocations: args.revocations.map_or(revocations, |n| n as usize),
            postgres: args.postgres.clone(),
            redis: args.redis.clone(),
            single_node: args.single_node,
            run_id: args.run_id.clone(),
        }
    }
}

pub(crate) fn run(args: CompareArgs) -> anyhow::Result<()> {
    let report = match &args.from_json {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let report: Report = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not a report written by tessera compare --format json",
                    path.display()
                )
            })?;
            if report.format != report::FORMAT {
                bail!(
                    "{} is a {:?} report; this tessera reads {:?}",
                    path.display(),
                    report.format,
                    report::FORMAT
                );
            }
            report
        }
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(measure_all(&Plan::from_args(&args)))?,
    };
    let rendered = report::render(&report, args.format);
    match &args.output {
        Some(path) => std::fs::write(path, rendered)
            .with_context(|| format!("writing the report to {}", path.display())),
        None => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(rendered.as_bytes())?;
            stdout.flush()?;
            Ok(())
        }
    }
}

/// A progress bar on standard error when it is a terminal; nothing otherwise.
struct Progress(indicatif::ProgressBar);

impl Progress {
    fn new(steps: u64) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self(indicatif::ProgressBar::hidden());
        }
        let bar = indicatif::ProgressBar::new(steps);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed:>4} [{bar:30}] {pos}/{len} {wide_msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        Self(bar)
    }

    fn message(&self, text: String) {
        self.0.set_message(text);
    }

    fn step(&self) {
        self.0.inc(1);
    }

    fn skip(&self, steps: u64) {
        self.0.inc(steps);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Steps of one setup: its start, then a throughput run, the logins and the logouts per model.
const SETUP_STEPS: u64 = 1 + 3 * 3;

/// Everything the servers told.
struct Measured {
    setups: Vec<Setup>,
    after_logout: Vec<AfterLogout>,
}

async fn measure_all(plan: &Plan) -> anyhow::Result<Report> {
    let progress = Progress::new(2 * SETUP_STEPS + Revocation::ALL.len() as u64);
    let backing = if plan.single_node {
        Err("not measured (--single-node)".to_owned())
    } else {
        progress.message("checking PostgreSQL and Redis".into());
        Backing::probe(&plan.postgres, &plan.redis, plan.run_id.as_deref()).await
    };
    // Every node lives inside `measure`: whichever way it ends (an error, Ctrl-C), its nodes are
    // killed before the schema and the keys they used are removed.
    let outcome = tokio::select! {
        measured = measure(plan, &progress, backing.as_ref()) => measured,
        signal = interrupted() => Err(anyhow::anyhow!("{signal}: every server started was stopped")),
    };
    if let Ok(backing) = &backing {
        progress.message("removing the schema and the Redis keys".into());
        if let Err(e) = backing.cleanup().await {
            eprintln!("tessera compare: {e:#}");
        }
    }
    drop(progress);
    let measured = outcome?;
    let mut notes = vec![
        "The client and the servers share this machine's CPUs: compare the models with each \
         other; a dedicated server answers more."
            .to_owned(),
        "Bytes are what this client wrote and read on the socket, headers included. It sends \
         only Host, the credential and a body's Content-Type and Content-Length; a browser adds \
         its own headers."
            .to_owned(),
        "Memory per live login is the growth of the node's resident memory (RSS) per login, \
         the median over five batches of logins: a rough figure, as the allocator keeps and \
         reuses memory in pages (0 or a negative value means too small to see). With three \
         nodes the logins live in Redis and PostgreSQL, not in the node."
            .to_owned(),
        "Logout to refusal is timed from the moment the logout is sent, so on the same node it \
         includes the logout's own round trip; another node is asked again and again until it \
         refuses. These runs use tokens.revocation = \"denylist\", the default; the last table \
         shows the other settings."
            .to_owned(),
    ];
    if cfg!(debug_assertions) {
        notes.push(
            "This is a debug build: build with --release for figures worth publishing.".into(),
        );
    }
    Ok(Report {
        format: report::FORMAT.into(),
        generated_at: now_rfc3339(),
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .into(),
        cpus: cpus(),
        settings: Settings {
            quick: plan.quick,
            duration_ms: u64::try_from(plan.duration.as_millis()).unwrap_or(u64::MAX),
            connections: plan.connections,
            logins: plan.logins,
            revocation_samples: plan.revocations,
        },
        questions: questions(),
        setups: measured.setups,
        after_logout: measured.after_logout,
        notes,
    })
}

/// Ctrl-C (SIGINT), SIGTERM or SIGHUP (the terminal went away): which one came. Without them
/// the process would end at once, leaving its servers running.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "interrupted (SIGINT)",
        _ = term.recv() => "terminated (SIGTERM)",
        _ = hup.recv() => "hung up (SIGHUP)",
    }
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The three questions for choosing a model, and which figures answer each.
fn questions() -> Vec<Question> {
    vec![
        Question {
            question: "Many domains or clients (several sites, mobile apps, other services)?"
                .into(),
            look_at: "Cookies stay with one site; a token travels to any domain or client as a \
                      header. The price is on the wire: bytes per authenticated request, paid \
                      on every request."
                .into(),
        },
        Question {
            question: "Several servers or services?".into(),
            look_at: "The three-node setup: throughput when the login state is shared through \
                      PostgreSQL + Redis, and the time until another node refuses a logged-out \
                      credential. A token is checked by its signature on any node; a session is \
                      looked up in the shared store."
                .into(),
        },
        Question {
            question: "High-security needs?".into(),
            look_at: "How soon a logout is refused, and what a credential copied before logout \
                      can still do: with tokens.revocation = \"none\" a copied access token works \
                      until it expires; a session, a denylist or an allowlist refuse it at once."
                .into(),
        },
    ]
}

async fn measure(
    plan: &Plan,
    progress: &Progress,
    backing: Result<&Backing, &String>,
) -> anyhow::Result<Measured> {
    let mut setups = Vec::new();

    progress.message("starting a node on SQLite".into());
    let sqlite = SqliteNode::start(Revocation::Denylist).await?;
    progress.step();
    let models = measure_setup(plan, progress, &[&sqlite.node], "SQLite").await?;
    setups.push(Setup {
        id: "sqlite".into(),
        title: "One node, embedded SQLite".into(),
        nodes: 1,
        skipped: None,
        models,
    });

    let cluster_title = "Three nodes, PostgreSQL + Redis".to_owned();
    let started = match backing {
        Ok(backing) => {
            progress.message("starting three nodes on PostgreSQL + Redis".into());
            // PostgreSQL and Redis answer, but a node may still refuse them (no right to create
            // the schema, say): that too is a setup not measured, not a failed comparison.
            backing
                .start_nodes()
                .await
                .map_err(|e| format!("the three nodes did not start: {e:#}"))
        }
        Err(why) => Err(why.clone()),
    };
    match started {
        Ok(nodes) => {
            progress.step();
            let refs: Vec<&Node> = nodes.iter().collect();
            let models = measure_setup(plan, progress, &refs, "three nodes").await?;
            drop(nodes);
            setups.push(Setup {
                id: "postgres-redis".into(),
                title: cluster_title,
                nodes: 3,
                skipped: None,
                models,
            });
        }
        Err(why) => {
            progress.skip(SETUP_STEPS);
            setups.push(Setup {
                id: "postgres-redis".into(),
                title: cluster_title,
                nodes: 3,
                skipped: Some(why),
                models: Vec::new(),
            });
        }
    }

    let mut after_logout = Vec::new();
    progress.message("copied credentials, tokens.revocation = \"denylist\"".into());
    after_logout.extend(copied_credentials(&sqlite.node, Revocation::Denylist, &Model::ALL).await?);
    progress.step();
    drop(sqlite);
    for mode in [Revocation::Allowlist, Revocation::None] {
        progress.message(format!(
            "copied credentials, tokens.revocation = \"{}\"",
            mode.as_str()
        ));
        let node = SqliteNode::start(mode).await?;
        after_logout
            .extend(copied_credentials(&node.node, mode, &[Model::Token, Model::Hybrid]).await?);
        progress.step();
    }
    // Grouped by model, each in the order of the settings.
    after_logout.sort_by_key(|row| {
        Model::ALL
            .iter()
            .position(|m| m.as_str() == row.model)
            .unwrap_or(usize::MAX)
    });
    Ok(Measured {
        setups,
        after_logout,
    })
}

/// Every figure of every model on one setup: `nodes[0]` takes the load and the logouts,
/// `nodes[1]` (if any) is the other node asked after a logout.
async fn measure_setup(
    plan: &Plan,
    progress: &Progress,
    nodes: &[&Node],
    tag: &str,
) -> anyhow::Result<Vec<ModelFigures>> {
    let Some(node) = nodes.first() else {
        bail!("no node to measure");
    };
    let addr = node.addr;
    let mut conn = Conn::new(addr);
    let mut figures = Vec::new();
    for model in Model::ALL {
        let name = model.as_str();
        let user = format!("compare-{name}");
        measure::register(&mut conn, &user).await?;

        // One login and one request, each on a connection of its own: their bytes.
        let (login, r) = measure::login(&mut Conn::new(addr), model, &user)
            .await
            .with_context(|| context(node, tag))?;
        let bytes_per_login = Bytes {
            sent: r.sent,
            received: r.received,
        };
        let me = login.get("/v1/me");
        let r = Conn::new(addr).send(&me).await?;
        if r.status != 200 {
            bail!(
                "{tag}: GET /v1/me with a fresh {name} login answered {}",
                r.status
            );
        }
        let bytes_per_request = Bytes {
            sent: r.sent,
            received: r.received,
        };

        progress.message(format!(
            "{tag}, {name}: {} connections for {:?}",
            plan.connections, plan.duration
        ));
        let load = measure::throughput(addr, &me, plan.connections, plan.duration)
            .await
            .with_context(|| context(node, tag))?;
        progress.step();

        progress.message(format!("{tag}, {name}: {} logins", plan.logins));
        let (memory, times) = memory_per_login(node, model, &user, plan.logins)
            .await
            .with_context(|| context(node, tag))?;
        let login_ms = Summary::of(times).unwrap_or_default();
        progress.step();

        progress.message(format!("{tag}, {name}: {} logouts", plan.revocations));
        let revocation_ms = revocation_delay(nodes, model, &user, plan.revocations)
            .await
            .with_context(|| context(node, tag))?;
        progress.step();

        figures.push(ModelFigures {
            model: name.into(),
            throughput: ThroughputFigures {
                requests_per_second: load.per_second,
                requests: load.requests,
                failures: load.failures,
                p50_ms: load.latency.median,
                p99_ms: load.latency.p99,
            },
            bytes_per_request,
            bytes_per_login,
            memory_per_login_bytes: memory,
            login_ms: LoginFigures {
                median: login_ms.median,
                p99: login_ms.p99,
            },
            revocation_ms,
        });
    }
    Ok(figures)
}

/// The memory a live login holds in the node, and each login's time: `logins` logins in
/// [`MEMORY_BATCHES`] batches, the node's resident memory read after each; the figure is the
/// median batch's growth per login. A few logins come first, so the password-hashing threads have
/// each hashed (argon2 takes 19 MiB a hash, which the allocator may keep), and the median leaves
/// out a batch during which the allocator gave memory back.
async fn memory_per_login(
    node: &Node,
    model: Model,
    user: &str,
    logins: usize,
) -> anyhow::Result<(Option<i64>, Vec<f64>)> {
    measure::login_times(node.addr, model, user, 2 * cpus()).await?;
    tokio::time::sleep(SETTLE).await;
    let mut rss = node.rss_bytes();
    let batches = MEMORY_BATCHES.min(logins).max(1);
    let mut per_login = Vec::with_capacity(batches);
    let mut times = Vec::with_capacity(logins);
    for batch in 0..batches {
        let n = logins / batches + usize::from(batch < logins % batches);
        times.extend(measure::login_times(node.addr, model, user, n).await?);
        tokio::time::sleep(SETTLE).await;
        let now = node.rss_bytes();
        if let (Some(before), Some(after)) = (rss, now) {
            per_login.push((after as f64 - before as f64) / n.max(1) as f64);
        }
        rss = now;
    }
    let memory = (per_login.len() == batches)
        .then(|| Summary::of(per_login).map(|s| s.median.round() as i64))
        .flatten();
    Ok((memory, times))
}

/// Batches of logins whose memory growth is read (see [`memory_per_login`]).
const MEMORY_BATCHES: usize = 5;

/// How long a node is left idle before its memory is read.
const SETTLE: Duration = Duration::from_millis(200);

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Says which node failed, with its last log lines.
fn context(node: &Node, tag: &str) -> String {
    let tail = node.log_tail();
    if tail.is_empty() {
        format!("measuring {tag} (node {})", node.addr)
    } else {
        format!(
            "measuring {tag} (node {}); its last log lines:\n{tail}",
            node.addr
        )
    }
}

/// `samples` times: a login on the first node, seen to work on every node asked; its logout on
/// the first node; then the first node and the other one asked until they refuse it.
async fn revocation_delay(
    nodes: &[&Node],
    model: Model,
    user: &str,
    samples: usize,
) -> anyhow::Result<RevocationFigures> {
    let Some(first) = nodes.first() else {
        bail!("no node to measure");
    };
    let other = nodes.get(1);
    let mut on_first = Conn::new(first.addr);
    let mut probe_first = Conn::new(first.addr);
    let mut probe_other = other.map(|n| Conn::new(n.addr));
    let mut same = Vec::new();
    let mut elsewhere = Vec::new();
    let mut not_refused = 0;
    for _ in 0..samples {
        let (login, _) = measure::login(&mut on_first, model, user).await?;
        let me = login.get("/v1/me");
        let me_first = me.encode(first.addr);
        let me_other = other.map(|n| me.encode(n.addr));
        measure::accepted(&mut probe_first, &me_first).await?;
        if let (Some(conn), Some(request)) = (probe_other.as_mut(), me_other.as_deref()) {
            measure::accepted(conn, request).await?;
        }
        let since = Instant::now();
        measure::logout(&mut on_first, &login).await?;
        let (here, there) = tokio::join!(
            measure::refused_after(&mut probe_first, &me_first, since),
            async {
                match (probe_other.as_mut(), me_other.as_deref()) {
                    (Some(conn), Some(request)) => {
                        measure::refused_after(conn, request, since).await.map(Some)
                    }
                    _ => Ok(None),
                }
            }
        );
        match here? {
            Some(ms) => same.push(ms),
            None => not_refused += 1,
        }
        match there? {
            Some(Some(ms)) => elsewhere.push(ms),
            Some(None) => not_refused += 1,
            None => {}
        }
    }
    let same = Summary::of(same);
    let elsewhere = Summary::of(elsewhere);
    Ok(RevocationFigures {
        samples,
        same_node_median: same.map(|s| s.median),
        same_node_max: same.map(|s| s.max),
        other_node_median: elsewhere.map(|s| s.median),
        other_node_max: elsewhere.map(|s| s.max),
        not_refused,
    })
}

/// For each model: a login, a copy of its credential, the logout, then each request a holder
/// of the copy could make, with the real answer.
async fn copied_credentials(
    node: &Node,
    mode: Revocation,
    models: &[Model],
) -> anyhow::Result<Vec<AfterLogout>> {
    let mut conn = Conn::new(node.addr);
    let mut rows = Vec::new();
    for &model in models {
        let user = format!("copied-{}", model.as_str());
        measure::register(&mut conn, &user).await?;
        let (login, _) = measure::login(&mut conn, model, &user).await?;
        let copy = login.clone();
        measure::logout(&mut conn, &login).await?;
        let mut probes = vec![
            ("GET /v1/me", Kind::Access, copy.get("/v1/me")),
            ("GET /v1/verify", Kind::Access, copy.get("/v1/verify")),
        ];
        if let Some((name, request)) = copy.refresh() {
            probes.push((name, Kind::Refresh, request));
        }
        for (name, kind, request) in probes {
            let r = conn.send(&request).await?;
            rows.push(AfterLogout {
                model: model.as_str().into(),
                revocation: (model != Model::Session).then(|| mode.as_str().into()),
                logout: Login::logout_name(model).into(),
                request: name.into(),
                status: r.status,
                accepted: (200..300).contains(&r.status),
                meaning: meaning(model, mode, kind, r.status, copy.expires_in),
            });
        }
    }
    Ok(rows)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A request authenticated by the copied credential.
    Access,
    /// A refresh with the copied refresh credential.
    Refresh,
}

/// What an answer to a copied credential means, in a few words.
fn meaning(
    model: Model,
    mode: Revocation,
    kind: Kind,
    status: u16,
    expires_in: Option<u64>,
) -> String {
    match (status, kind) {
        (200..=299, Kind::Refresh) => {
            "ACCEPTED: the copy got a new token pair; the login goes on".into()
        }
        (200..=299, Kind::Access) if model == Model::Session => {
            "ACCEPTED: the session still works after its logout".into()
        }
        (200..=299, Kind::Access) => {
            let until =
                expires_in.map_or_else(String::new, |s| format!(" (up to {s} s after the login)"));
            let why = if mode == Revocation::None {
                "; revocation = \"none\" keeps no list the check could consult"
            } else {
                ""
            };
            format!("ACCEPTED: the copied access token works until it expires{until}{why}")
        }
        (401, Kind::Refresh) => {
            "refused: the refresh token ended with the login; no new access token".into()
        }
        (401, Kind::Access) => match (model, mode) {
            (Model::Session, _) => "refused: the session was deleted on the server".into(),
            (_, Revocation::Denylist) => {
                "refused: the ended login is on the denylist every check consults".into()
            }
            (_, Revocation::Allowlist) => {
                "refused: the token is no longer on the allowlist of live tokens".into()
            }
            (_, Revocation::None) => "refused".into(),
        },
        (403, _) => "refused (403: forbidden)".into(),
        (other, _) => format!("unexpected answer {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.5s"), Ok(Duration::from_millis(500)));
        for bad in ["", "s", "3h", "1ms", "11m", "-1s", "1.2.3s", "NaNs"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_run_id("abc123").is_ok());
        for bad in ["", "ABC", "a-b", "a\"b", &"a".repeat(33)] {
            assert!(parse_run_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn meanings() {
        let m = meaning(Model::Token, Revocation::None, Kind::Access, 200, Some(600));
        assert!(m.starts_with("ACCEPTED") && m.contains("600 s"), "{m}");
        let m = meaning(
            Model::Session,
            Revocation::Denylist,
            Kind::Access,
            401,
            None,
        );
        assert!(m.contains("deleted"), "{m}");
        let m = meaning(
            Model::Hybrid,
            Revocation::Allowlist,
            Kind::Refresh,
            401,
            None,
        );
        assert!(m.starts_with("refused"), "{m}");
    }
}
