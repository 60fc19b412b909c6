//! `tessera compare` run for real with `--quick`: the structure of its report in each format (the
//! labels, headers, keys and charts, never the figures), the three-node rows when PostgreSQL and
//! Redis answer, the note when they do not, and its refusals of bad input.
//!
//! The three-node runs need PostgreSQL (`TESSERA_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`) and Redis (`TESSERA_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`), and fail, never skip, when either cannot be reached. They run one
//! at a time (a lock), so each can check that its schema and its keys are gone afterwards.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use serde_json::Value;

/// The three-node runs, one at a time.
static CLUSTER: Mutex<()> = Mutex::new(());

fn postgres_url() -> String {
    std::env::var("TESSERA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn redis_url() -> String {
    std::env::var("TESSERA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `tessera compare --quick ARGS` in `dir`, with no `TESSERA_…` variable.
fn compare(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["compare"])
        .args(args)
        .stdin(Stdio::null());
    let out = cmd.output().expect("run tessera compare");
    assert!(
        out.status.success(),
        "tessera compare {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn cluster_args() -> Vec<String> {
    vec![
        "--postgres".into(),
        postgres_url(),
        "--redis".into(),
        redis_url(),
    ]
}

/// A PostgreSQL URL nothing answers at.
const NOBODY: &str = "postgres://postgres@127.0.0.1:1/nothing";

const MODELS: [&str; 3] = ["session", "token", "hybrid"];

const ROW_LABELS: [&str; 8] = [
    "authenticated requests per second (GET /v1/me)",
    "p99 latency (GET /v1/me)",
    "bytes per authenticated request (sent / received)",
    "bytes per login (sent / received)",
    "server memory per live login",
    "login latency (median / p99, argon2 included)",
    "logout to refusal, same node (median / max)",
    "logout to refusal, another node (median / max)",
];

/// A run id no other run uses: the schema is `tessera_compare_ID`, the prefix
/// `tessera-compare:ID:`.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("t{:x}{:x}", std::process::id(), nanos)
}

/// Whether the schema of the run `id` exists.
fn schema_exists(id: &str) -> bool {
    use sqlx::Connection;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut conn = sqlx::PgConnection::connect(&postgres_url())
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL at {} ({e})", postgres_url()));
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT schema_name::text FROM information_schema.schemata WHERE schema_name = $1",
            )
            .bind(format!("tessera_compare_{id}"))
            .fetch_all(&mut conn)
            .await
            .unwrap();
            !rows.is_empty()
        })
}

/// Redis keys under the prefix of the run `id`.
fn keys_of(id: &str) -> Vec<String> {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client
        .get_connection_with_timeout(std::time::Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("Redis at {} ({e})", redis_url()));
    redis::cmd("KEYS")
        .arg(format!("tessera-compare:{id}:*"))
        .query(&mut conn)
        .unwrap()
}

#[test]
fn text_has_every_section_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let out = compare(dir.path(), &["--quick", "--single-node"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "Tessera: session, token and hybrid login as a client sees them",
        "The three questions for choosing a model",
        "Many domains or clients",
        "Several servers or services?",
        "High-security needs?",
        "== One node, embedded SQLite ==",
        "== Three nodes, PostgreSQL + Redis ==",
        "skipped: not measured (--single-node)",
        "== What a credential copied before logout can still do ==",
        "tokens.revocation",
        "Notes",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
    for label in ROW_LABELS {
        let line = text
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no row {label:?} in:\n{text}"));
        assert!(
            line.split_whitespace().count() > label.split_whitespace().count() + 2,
            "row {label:?} has no figures: {line}"
        );
    }
    // The copied-credential rows: the session once, token and hybrid under each setting.
    for (model, setting) in [
        ("session", "n/a"),
        ("token", "denylist"),
        ("token", "allowlist"),
        ("token", "none"),
        ("hybrid", "denylist"),
        ("hybrid", "allowlist"),
        ("hybrid", "none"),
    ] {
        assert!(
            text.lines().any(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words.len() > 2 && words[0] == model && words[1] == setting
            }),
            "no row for {model} with {setting} in:\n{text}"
        );
    }
    // Nothing on standard error when it is not a terminal: no progress bar.
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn markdown_has_the_tables_and_says_why_three_nodes_were_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let out = compare(
        dir.path(),
        &["--quick", "--format", "markdown", "--postgres", NOBODY],
    );
    let md = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "# Tessera: session, token and hybrid login as a client sees them",
        "## The three questions for choosing a model",
        "| question | where to look |",
        "## One node, embedded SQLite",
        "| figure | session | token | hybrid |",
        "|---|---:|---:|---:|",
        "## Three nodes, PostgreSQL + Redis",
        "Skipped: PostgreSQL is not reachable at postgres://postgres@127.0.0.1:1/nothing",
        "## What a credential copied before logout can still do",
        "| model | tokens.revocation | logout | request with the copy | status | meaning |",
        "## Notes",
    ] {
        assert!(md.contains(needle), "no {needle:?} in:\n{md}");
    }
    for label in ROW_LABELS {
        assert!(
            md.contains(&format!("| {label} |")),
            "no row {label:?} in:\n{md}"
        );
    }
    // Exactly one setup table: the skipped one has none.
    assert_eq!(
        md.matches("| figure | session | token | hybrid |").count(),
        1
    );
}

/// The JSON report, with the three nodes; afterwards no schema and no key of the run is left.
#[test]
fn json_has_every_key_and_the_three_node_figures() {
    let _one_at_a_time = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let id = run_id();
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--quick".to_owned(),
        "--format".into(),
        "json".into(),
        "--run-id".into(),
        id.clone(),
    ];
    args.extend(cluster_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = compare(dir.path(), &args);
    let report: Value = serde_json::from_slice(&out.stdout).expect("the report is JSON");

    assert_eq!(report["format"], "tessera-compare/1");
    for key in [
        "generated_at",
        "build",
        "cpus",
        "settings",
        "questions",
        "setups",
        "after_logout",
        "notes",
    ] {
        assert!(!report[key].is_null(), "no {key} in {report:#}");
    }
    assert_eq!(report["settings"]["quick"], true);
    assert_eq!(report["questions"].as_array().unwrap().len(), 3);
    let setups = report["setups"].as_array().unwrap();
    let ids: Vec<&str> = setups.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["sqlite", "postgres-redis"]);
    for setup in setups {
        assert!(
            setup["skipped"].is_null(),
            "{} was skipped: {}",
            setup["id"],
            setup["skipped"]
        );
        let models = setup["models"].as_array().unwrap();
        let names: Vec<&str> = models
            .iter()
            .map(|m| m["model"].as_str().unwrap())
            .collect();
        assert_eq!(names, MODELS);
        for m in models {
            let what = format!("{} {}", setup["id"], m["model"]);
            for key in [
                "requests_per_second",
                "requests",
                "failures",
                "p50_ms",
                "p99_ms",
            ] {
                assert!(m["throughput"][key].is_number(), "{what}: throughput.{key}");
            }
            assert_eq!(m["throughput"]["failures"], 0, "{what}: failed requests");
            assert!(m["throughput"]["requests"].as_u64().unwrap() > 0, "{what}");
            for key in ["bytes_per_request", "bytes_per_login"] {
                for side in ["sent", "received"] {
                    assert!(
                        m[key][side].as_u64().unwrap() > 50,
                        "{what}: {key}.{side}: {}",
                        m[key][side]
                    );
                }
            }
            assert!(m["memory_per_login_bytes"].is_i64(), "{what}: memory");
            assert!(m["login_ms"]["median"].as_f64().unwrap() > 0.0, "{what}");
            assert!(m["login_ms"]["p99"].is_number(), "{what}");
            let revocation = &m["revocation_ms"];
            assert_eq!(revocation["not_refused"], 0, "{what}: {revocation}");
            assert!(revocation["same_node_median"].is_number(), "{what}");
            assert!(revocation["same_node_max"].is_number(), "{what}");
            if setup["id"] == "sqlite" {
                assert!(revocation["other_node_median"].is_null(), "{what}");
            } else {
                // The three-node rows: another node refused each logout, and how soon is known.
                assert!(
                    revocation["other_node_median"].is_number(),
                    "{what}: {revocation}"
                );
                assert!(revocation["other_node_max"].is_number(), "{what}");
            }
        }
    }
    // A credential copied before logout: refused everywhere except a token or hybrid access
    // token under revocation = "none", which works until it expires.
    let rows = report["after_logout"].as_array().unwrap();
    assert_eq!(rows.len(), 2 + 3 * 3 * 2, "{rows:#?}");
    for row in rows {
        for key in [
            "model",
            "revocation",
            "logout",
            "request",
            "status",
            "accepted",
            "meaning",
        ] {
            assert!(row.get(key).is_some(), "no {key} in {row}");
        }
        let stateless = row["revocation"] == "none"
            && row["request"].as_str() != Some("POST /v1/token/refresh")
            && row["request"].as_str() != Some("POST /v1/hybrid/refresh");
        let expected = if stateless { 200 } else { 401 };
        assert_eq!(row["status"], expected, "{row}");
        assert_eq!(row["accepted"], stateless, "{row}");
    }
    // Cleaned up.
    assert!(
        !schema_exists(&id),
        "schema tessera_compare_{id} left behind"
    );
    let keys = keys_of(&id);
    assert!(keys.is_empty(), "Redis keys left behind: {keys:?}");
}

/// The HTML report: one self-contained document that parses, an `<svg>` per chart, no script,
/// nothing loaded from elsewhere.
#[test]
fn html_is_one_self_contained_page_with_three_charts() {
    let _one_at_a_time = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.html");
    let mut args = vec![
        "--quick".to_owned(),
        "--format".into(),
        "html".into(),
        "--output".into(),
        file.display().to_string(),
    ];
    args.extend(cluster_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = compare(dir.path(), &args);
    assert!(out.stdout.is_empty(), "--output writes nothing to stdout");
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));

    let mut svgs = Vec::new();
    let mut tags = Vec::new();
    let mut tables = 0;
    for token in html5gum::Tokenizer::new(html.as_str()) {
        let Ok(token) = token;
        match token {
            html5gum::Token::Error(e) => panic!("the HTML does not parse: {e:?}"),
            html5gum::Token::StartTag(tag) => {
                let name = String::from_utf8_lossy(&tag.name).into_owned();
                for (attr, value) in &tag.attributes {
                    let attr = String::from_utf8_lossy(attr).to_ascii_lowercase();
                    let value = String::from_utf8_lossy(value).to_ascii_lowercase();
                    assert!(
                        !attr.starts_with("on"),
                        "an event handler attribute: <{name} {attr}>"
                    );
                    if matches!(attr.as_str(), "src" | "href" | "xlink:href" | "action") {
                        assert!(
                            !value.contains("//") && !value.starts_with("javascript:"),
                            "<{name} {attr}={value:?}> loads from elsewhere"
                        );
                    }
                }
                if name == "svg" {
                    let id = tag
                        .attributes
                        .get(b"id".as_slice())
                        .map(|v| String::from_utf8_lossy(v).into_owned());
                    svgs.push(id.unwrap_or_default());
                }
                if name == "table" {
                    tables += 1;
                }
                tags.push(name);
            }
            _ => {}
        }
    }
    for forbidden in ["script", "link", "iframe", "img", "object", "embed", "base"] {
        assert!(
            !tags.iter().any(|t| t == forbidden),
            "a <{forbidden}> in the report"
        );
    }
    assert!(!html.to_ascii_lowercase().contains("<script"));
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert_eq!(svgs, ["throughput", "bytes", "revocation-delay"]);
    // The questions, both setups and the copied credentials.
    assert_eq!(tables, 4, "{html}");
    for needle in [
        "The three questions for choosing a model",
        "One node, embedded SQLite",
        "Three nodes, PostgreSQL + Redis",
        "What a credential copied before logout can still do",
        "another node (Three nodes, PostgreSQL + Redis)",
        "<style>",
    ] {
        assert!(html.contains(needle), "no {needle:?} in the HTML");
    }
    // Each chart has a bar per model and series.
    let throughput = html
        .split("<svg id=\"throughput\"")
        .nth(1)
        .and_then(|s| s.split("</svg>").next())
        .unwrap();
    assert_eq!(throughput.matches("<rect").count(), 2 + 3 * 2);
}

/// A report written as JSON renders again in every format without measuring.
#[test]
fn a_saved_report_renders_again_and_bad_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    std::fs::write(&json, SAVED).unwrap();
    let json = json.display().to_string();
    for format in ["text", "markdown", "json", "html"] {
        let out = compare(dir.path(), &["--from-json", &json, "--format", format]);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("One node, embedded SQLite"),
            "{format}: {text}"
        );
        match format {
            "html" => {
                assert!(text.contains("&lt;b&gt;bold&lt;/b&gt;"), "{text}");
                assert!(!text.contains("<b>"), "the HTML does not escape: {text}");
            }
            "markdown" => assert!(text.contains("\\| pipe"), "{text}"),
            _ => {}
        }
    }

    let refused = |args: &[&str], says: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .current_dir(dir.path())
            .args(["compare"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    };
    refused(&["--duration", "1h"], "unknown unit");
    refused(&["--duration", "20m"], "from 100ms to 10m");
    refused(&["--connections", "0"], "connections");
    refused(&["--format", "pdf"], "pdf");
    refused(&["--from-json", "/nonexistent/report.json"], "reading");
    let not_a_report = dir.path().join("other.json");
    std::fs::write(&not_a_report, "{\"hello\": 1}").unwrap();
    refused(
        &["--from-json", &not_a_report.display().to_string()],
        "is not a report written by tessera compare",
    );
}

/// A small saved report, with text that must be escaped.
const SAVED: &str = r#"{
  "format": "tessera-compare/1",
  "generated_at": "2026-11-29T18:00:00Z",
  "build": "release",
  "cpus": 2,
  "settings": {"quick": false, "duration_ms": 3000, "connections": 16, "logins": 100, "revocation_samples": 20},
  "questions": [{"question": "<b>bold</b> | pipe", "look_at": "here"}],
  "setups": [
    {"id": "sqlite", "title": "One node, embedded SQLite", "nodes": 1, "skipped": null, "models": [
      {"model": "session",
       "throughput": {"requests_per_second": 10000.0, "requests": 30000, "failures": 0, "p50_ms": 1.0, "p99_ms": 3.0},
       "bytes_per_request": {"sent": 100, "received": 400},
       "bytes_per_login": {"sent": 150, "received": 700},
       "memory_per_login_bytes": 1200,
       "login_ms": {"median": 25.0, "p99": 40.0},
       "revocation_ms": {"samples": 20, "same_node_median": 0.5, "same_node_max": 1.0, "other_node_median": null, "other_node_max": null, "not_refused": 0}}
    ]},
    {"id": "postgres-redis", "title": "Three nodes, PostgreSQL + Redis", "nodes": 3, "skipped": "not measured (--single-node)", "models": []}
  ],
  "after_logout": [
    {"model": "token", "revocation": "none", "logout": "POST /v1/token/revoke (refresh token)", "request": "GET /v1/me", "status": 200, "accepted": true, "meaning": "<b>bold</b>"}
  ],
  "notes": ["a note"]
}"#;
