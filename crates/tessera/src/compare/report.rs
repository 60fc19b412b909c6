//! What `tessera compare` found, as one [`Report`], and its four renderings: text (the
//! default), Markdown, JSON and HTML.
//!
//! The JSON is the [`Report`] as serde writes it; `format` names its version
//! (`tessera-compare/1`), and fields are only ever added under the same version:
//!
//! ```text
//! {
//!   "format": "tessera-compare/1",
//!   "generated_at": "2026-11-29T18:00:00Z",   RFC 3339, UTC
//!   "build": "release" | "debug",             how the measuring binary was built
//!   "cpus": 2,
//!   "settings": { "quick", "duration_ms", "connections", "logins", "revocation_samples" },
//!   "questions": [ { "question", "look_at" } ],          the three questions for choosing
//!   "setups": [ {
//!     "id": "sqlite" | "postgres-redis", "title", "nodes",
//!     "skipped": null | "why it was not measured",
//!     "models": [ {
//!       "model": "session" | "token" | "hybrid",
//!       "throughput": { "requests_per_second", "requests", "failures", "p50_ms", "p99_ms" },
//!       "bytes_per_request": { "sent", "received" },  GET /v1/me, headers included
//!       "bytes_per_login": { "sent", "received" },
//!       "memory_per_login_bytes": null | integer,     the node's RSS growth / logins
//!       "login_ms": { "median", "p99" },
//!       "revocation_ms": { "samples", "same_node_median", "same_node_max",
//!                          "other_node_median", "other_node_max", "not_refused" }
//!     } ]
//!   } ],
//!   "after_logout": [ { "model", "revocation", "logout", "request", "status", "accepted",
//!                       "meaning" } ],
//!   "notes": [ "…" ]
//! }
//! ```
//!
//! Times are milliseconds, sizes bytes. A figure that could not be taken is `null`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The version of the JSON structure.
pub(crate) const FORMAT: &str = "tessera-compare/1";

/// Everything measured, in the order it is shown.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Report {
    pub format: String,
    pub generated_at: String,
    pub build: String,
    pub cpus: usize,
    pub settings: Settings,
    pub questions: Vec<Question>,
    pub setups: Vec<Setup>,
    pub after_logout: Vec<AfterLogout>,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub quick: bool,
    pub duration_ms: u64,
    pub connections: usize,
    pub logins: usize,
    pub revocation_samples: usize,
}

/// One of the three questions for choosing a model, and the figures that answer it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Question {
    pub question: String,
    pub look_at: String,
}

/// One deployment measured: a node on SQLite, or three nodes on PostgreSQL + Redis.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Setup {
    pub id: String,
    pub title: String,
    pub nodes: u32,
    /// Why this setup was not measured (then `models` is empty).
    pub skipped: Option<String>,
    pub models: Vec<ModelFigures>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ModelFigures {
    pub model: String,
    pub throughput: ThroughputFigures,
    pub bytes_per_request: Bytes,
    pub bytes_per_login: Bytes,
    pub memory_per_login_bytes: Option<i64>,
    pub login_ms: LoginFigures,
    pub revocation_ms: RevocationFigures,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ThroughputFigures {
    pub requests_per_second: f64,
    pub requests: u64,
    pub failures: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct Bytes {
    pub sent: u64,
    pub received: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct LoginFigures {
    pub median: f64,
    pub p99: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RevocationFigures {
    pub samples: usize,
    pub same_node_median: Option<f64>,
    pub same_node_max: Option<f64>,
    /// `None` with one node.
    pub other_node_median: Option<f64>,
    pub other_node_max: Option<f64>,
    /// Samples still accepted when the measurement gave up waiting.
    pub not_refused: usize,
}

/// One request made with a credential copied before its logout, after the logout.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AfterLogout {
    pub model: String,
    /// `tokens.revocation` of the node; `None` for the session model, which it does not touch.
    pub revocation: Option<String>,
    pub logout: String,
    pub request: String,
    pub status: u16,
    pub accepted: bool,
    pub meaning: String,
}

/// The output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Text,
    Markdown,
    Json,
    Html,
}

/// The report in `format`.
pub(crate) fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Text => text(report),
        Format::Markdown => markdown(report),
        Format::Json => {
            let mut out = serde_json::to_string_pretty(report).unwrap_or_else(|e| {
                // Serializing plain structs of numbers and strings cannot fail; say so if it did.
                format!("{{\"error\": {:?}}}", e.to_string())
            });
            out.push('\n');
            out
        }
        Format::Html => html(report),
    }
}

// ---------------------------------------------------------------------------------------------
// Figures as text, shared by every format

const MODELS: [&str; 3] = ["session", "token", "hybrid"];

/// The row labels of a setup's table (the golden tests look for them).
pub(crate) const ROW_LABELS: [&str; 8] = [
    "authenticated requests per second (GET /v1/me)",
    "p99 latency (GET /v1/me)",
    "bytes per authenticated request (sent / received)",
    "bytes per login (sent / received)",
    "server memory per live login",
    "login latency (median / p99, argon2 included)",
    "logout to refusal, same node (median / max)",
    "logout to refusal, another node (median / max)",
];

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn fmt_ms(ms: f64) -> String {
    if !ms.is_finite() {
        "n/a".into()
    } else if ms < 1.0 {
        format!("{ms:.3} ms")
    } else if ms < 100.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn fmt_bytes(b: Bytes) -> String {
    format!("{} B / {} B", thousands(b.sent), thousands(b.received))
}

fn fmt_memory(bytes: Option<i64>) -> String {
    match bytes {
        None => "n/a".into(),
        Some(b) if b.unsigned_abs() >= 10 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        Some(b) => format!("{b} B"),
    }
}

fn fmt_delay(median: Option<f64>, max: Option<f64>, not_refused: usize) -> String {
    let mut out = match (median, max) {
        (Some(m), Some(x)) => format!("{} / {}", fmt_ms(m), fmt_ms(x)),
        _ => "n/a".into(),
    };
    if not_refused > 0 {
        let _ = write!(out, " ({not_refused} still accepted)");
    }
    out
}

fn model<'a>(setup: &'a Setup, name: &str) -> Option<&'a ModelFigures> {
    setup.models.iter().find(|m| m.model == name)
}

/// The table of a measured setup: a label and one cell per model.
fn setup_rows(setup: &Setup) -> Vec<(&'static str, [String; 3])> {
    let cells = |f: &dyn Fn(&ModelFigures) -> String| -> [String; 3] {
        MODELS.map(|name| model(setup, name).map_or_else(|| "n/a".into(), f))
    };
    let one_node = setup.nodes < 2;
    vec![
        (
            ROW_LABELS[0],
            cells(&|m| {
                let mut s = format!("{}/s", thousands(m.throughput.requests_per_second as u64));
                if m.throughput.failures > 0 {
                    let _ = write!(s, " ({} failed)", m.throughput.failures);
                }
                s
            }),
        ),
        (ROW_LABELS[1], cells(&|m| fmt_ms(m.throughput.p99_ms))),
        (ROW_LABELS[2], cells(&|m| fmt_bytes(m.bytes_per_request))),
        (ROW_LABELS[3], cells(&|m| fmt_bytes(m.bytes_per_login))),
        (
            ROW_LABELS[4],
            cells(&|m| fmt_memory(m.memory_per_login_bytes)),
        ),
        (
            ROW_LABELS[5],
            cells(&|m| format!("{} / {}", fmt_ms(m.login_ms.median), fmt_ms(m.login_ms.p99))),
        ),
        (
            ROW_LABELS[6],
            cells(&|m| {
                fmt_delay(
                    m.revocation_ms.same_node_median,
                    m.revocation_ms.same_node_max,
                    0,
                )
            }),
        ),
        (
            ROW_LABELS[7],
            cells(&|m| {
                if one_node {
                    "n/a (one node)".into()
                } else {
                    fmt_delay(
                        m.revocation_ms.other_node_median,
                        m.revocation_ms.other_node_max,
                        m.revocation_ms.not_refused,
                    )
                }
            }),
        ),
    ]
}

fn measured_line(report: &Report) -> String {
    let s = &report.settings;
    format!(
        "Measured {} with a {} build on {} CPU(s): {} connection(s) for {} per throughput run, \
         {} login(s) per model for memory and login latency, {} logout(s) per model for the \
         revocation delay{}.",
        report.generated_at,
        report.build,
        report.cpus,
        s.connections,
        if s.duration_ms.is_multiple_of(1000) {
            format!("{} s", s.duration_ms / 1000)
        } else {
            format!("{} ms", s.duration_ms)
        },
        s.logins,
        s.revocation_samples,
        if s.quick {
            " (--quick: figures for checking the tool, not for reading)"
        } else {
            ""
        }
    )
}

const TITLE: &str = "Tessera: session, token and hybrid login as a client sees them";
const AFTER_TITLE: &str = "What a credential copied before logout can still do";
const QUESTIONS_TITLE: &str = "The three questions for choosing a model";
const AFTER_HEADERS: [&str; 6] = [
    "model",
    "tokens.revocation",
    "logout",
    "request with the copy",
    "status",
    "meaning",
];

fn after_cells(row: &AfterLogout) -> [String; 6] {
    [
        row.model.clone(),
        row.revocation.clone().unwrap_or_else(|| "n/a".into()),
        row.logout.clone(),
        row.request.clone(),
        row.status.to_string(),
        row.meaning.clone(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Text

fn text_table(out: &mut String, headers: &[&str], rows: &[Vec<String>]) {
    let columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            if i + 1 < columns {
                let pad = widths[i].saturating_sub(cell.chars().count());
                text.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(out, &mut headers.iter().copied());
    for row in rows {
        line(out, &mut row.iter().map(String::as_str));
    }
}

fn text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{TITLE}\n");
    let _ = writeln!(out, "{}\n", measured_line(report));
    let _ = writeln!(out, "{QUESTIONS_TITLE}\n");
    for q in &report.questions {
        let _ = writeln!(out, "  {}\n    {}", q.question, q.look_at);
    }
    for setup in &report.setups {
        let _ = writeln!(out, "\n== {} ==\n", setup.title);
        match &setup.skipped {
            Some(why) => {
                let _ = writeln!(out, "skipped: {why}");
            }
            None => {
                let rows: Vec<Vec<String>> = setup_rows(setup)
                    .into_iter()
                    .map(|(label, cells)| std::iter::once(label.to_owned()).chain(cells).collect())
                    .collect();
                text_table(&mut out, &["", "session", "token", "hybrid"], &rows);
            }
        }
    }
    let _ = writeln!(out, "\n== {AFTER_TITLE} ==\n");
    let rows: Vec<Vec<String>> = report
        .after_logout
        .iter()
        .map(|r| after_cells(r).into())
        .collect();
    text_table(&mut out, &AFTER_HEADERS, &rows);
    if !report.notes.is_empty() {
        let _ = writeln!(out, "\nNotes");
        for note in &report.notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Markdown

fn md_cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

fn md_table(out: &mut String, headers: &[&str], align: &[&str], rows: &[Vec<String>]) {
    let _ = writeln!(
        out,
        "| {} |",
        headers
            .iter()
            .map(|h| md_cell(h))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(out, "|{}|", align.join("|"));
    for row in rows {
        let _ = writeln!(
            out,
            "| {} |",
            row.iter()
                .map(|c| md_cell(c))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
}

fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {TITLE}\n");
    let _ = writeln!(out, "{}\n", md_cell(&measured_line(report)));
    let _ = writeln!(out, "## {QUESTIONS_TITLE}\n");
    let rows: Vec<Vec<String>> = report
        .questions
        .iter()
        .map(|q| vec![q.question.clone(), q.look_at.clone()])
        .collect();
    md_table(
        &mut out,
        &["question", "where to look"],
        &["---", "---"],
        &rows,
    );
    for setup in &report.setups {
        let _ = writeln!(out, "\n## {}\n", md_cell(&setup.title));
        match &setup.skipped {
            Some(why) => {
                let _ = writeln!(out, "Skipped: {}", md_cell(why));
            }
            None => {
                let rows: Vec<Vec<String>> = setup_rows(setup)
                    .into_iter()
                    .map(|(label, cells)| std::iter::once(label.to_owned()).chain(cells).collect())
                    .collect();
                md_table(
                    &mut out,
                    &["figure", "session", "token", "hybrid"],
                    &["---", "---:", "---:", "---:"],
                    &rows,
                );
            }
        }
    }
    let _ = writeln!(out, "\n## {AFTER_TITLE}\n");
    let rows: Vec<Vec<String>> = report
        .after_logout
        .iter()
        .map(|r| after_cells(r).into())
        .collect();
    md_table(
        &mut out,
        &AFTER_HEADERS,
        &["---", "---", "---", "---", "---:", "---"],
        &rows,
    );
    if !report.notes.is_empty() {
        let _ = writeln!(out, "\n## Notes\n");
        for note in &report.notes {
            let _ = writeln!(out, "- {}", md_cell(note));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// HTML: one file, inline CSS, no script, nothing loaded from elsewhere

/// `text` safe anywhere in HTML text or a quoted attribute.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const COLORS: [&str; 4] = ["#2b6cb0", "#dd6b20", "#2f855a", "#805ad5"];

/// A horizontal bar chart: one group of bars per model, one bar per series.
fn bar_chart(
    id: &str,
    title: &str,
    series: &[String],
    groups: &[(&str, Vec<Option<f64>>)],
    value_text: &dyn Fn(f64) -> String,
) -> String {
    const WIDTH: f64 = 760.0;
    const LABEL: f64 = 80.0;
    const BARS: f64 = 520.0;
    const BAR: f64 = 16.0;
    const GAP: f64 = 4.0;
    const GROUP_GAP: f64 = 14.0;
    const LEGEND: f64 = 18.0;
    let max = groups
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let scale = if max > 0.0 { BARS / max } else { 0.0 };
    let per_group = series.len() as f64 * (BAR + GAP) + GROUP_GAP;
    let legend = series.len() as f64 * LEGEND;
    let height = legend + 8.0 + groups.len() as f64 * per_group;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg id="{}" class="chart" role="img" aria-labelledby="{}-title" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}"><title id="{}-title">{}</title>"#,
        esc(id),
        esc(id),
        esc(id),
        esc(title)
    );
    // The legend: one series a line, so long names never run off the chart.
    for (i, name) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let top = 6.0 + i as f64 * LEGEND;
        let _ = write!(
            svg,
            r#"<rect x="{LABEL}" y="{top}" width="12" height="12" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
            LABEL + 16.0,
            top + 10.0,
            esc(name)
        );
    }
    let mut y = legend + 8.0;
    for (label, values) in groups {
        let middle = y + (series.len() as f64 * (BAR + GAP) - GAP) / 2.0 + 4.0;
        let _ = write!(
            svg,
            r#"<text x="0" y="{middle}" class="group">{}</text>"#,
            esc(label)
        );
        for (i, value) in values.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            match value.filter(|v| v.is_finite()) {
                Some(v) => {
                    let w = (v * scale).max(1.0);
                    let _ = write!(
                        svg,
                        r#"<rect x="{LABEL}" y="{y}" width="{w:.1}" height="{BAR}" fill="{color}"><title>{}</title></rect><text x="{:.1}" y="{}">{}</text>"#,
                        esc(&format!(
                            "{}: {}",
                            series.get(i).map_or("", String::as_str),
                            value_text(v)
                        )),
                        LABEL + w + 4.0,
                        y + 12.0,
                        esc(&value_text(v))
                    );
                }
                None => {
                    let _ = write!(
                        svg,
                        r#"<text x="{}" y="{}" class="na">n/a</text>"#,
                        LABEL + 4.0,
                        y + 12.0
                    );
                }
            }
            y += BAR + GAP;
        }
        y += GROUP_GAP;
    }
    svg.push_str("</svg>");
    svg
}

fn html_table(out: &mut String, headers: &[&str], rows: &[Vec<String>]) {
    out.push_str("<table><thead><tr>");
    for h in headers {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            if i == 0 {
                let _ = write!(out, "<th scope=\"row\">{}</th>", esc(cell));
            } else {
                let _ = write!(out, "<td>{}</td>", esc(cell));
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>\n");
}

const CSS: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1a202c}\
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}\
th,td{border:1px solid #cbd5e0;padding:.3rem .6rem;text-align:left;vertical-align:top}\
thead th{background:#edf2f7}\
svg.chart{display:block;margin:1rem 0;font-size:12px;max-width:100%;height:auto}\
svg text{fill:#1a202c}svg text.na{fill:#718096}svg text.group{font-weight:bold}\
.skipped{color:#9c4221}";

fn html(report: &Report) -> String {
    let measured: Vec<&Setup> = report
        .setups
        .iter()
        .filter(|s| s.skipped.is_none())
        .collect();
    let value = |setup: &Setup, name: &str, f: &dyn Fn(&ModelFigures) -> Option<f64>| {
        model(setup, name).and_then(f)
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{CSS}</style></head><body>\n<h1>{}</h1>\n<p>{}</p>\n",
        esc(TITLE),
        esc(TITLE),
        esc(&measured_line(report))
    );
    let _ = writeln!(out, "<h2>{}</h2>", esc(QUESTIONS_TITLE));
    let rows: Vec<Vec<String>> = report
        .questions
        .iter()
        .map(|q| vec![q.question.clone(), q.look_at.clone()])
        .collect();
    html_table(&mut out, &["question", "where to look"], &rows);

    // The charts.
    let setup_names: Vec<String> = measured.iter().map(|s| s.title.clone()).collect();
    let _ = writeln!(out, "<h2>Throughput</h2>");
    let groups: Vec<(&str, Vec<Option<f64>>)> = MODELS
        .iter()
        .map(|&name| {
            (
                name,
                measured
                    .iter()
                    .map(|s| value(s, name, &|m| Some(m.throughput.requests_per_second)))
                    .collect(),
            )
        })
        .collect();
    out.push_str(&bar_chart(
        "throughput",
        "Authenticated requests per second (GET /v1/me), per model",
        &setup_names,
        &groups,
        &|v| format!("{}/s", thousands(v as u64)),
    ));
    let _ = writeln!(out, "\n<h2>Bytes on the wire</h2>");
    let bytes_series = vec![
        "per authenticated request (sent + received)".to_owned(),
        "per login (sent + received)".to_owned(),
    ];
    let first = measured.first().copied();
    let groups: Vec<(&str, Vec<Option<f64>>)> = MODELS
        .iter()
        .map(|&name| {
            let m = first.and_then(|s| model(s, name));
            (
                name,
                vec![
                    m.map(|m| (m.bytes_per_request.sent + m.bytes_per_request.received) as f64),
                    m.map(|m| (m.bytes_per_login.sent + m.bytes_per_login.received) as f64),
                ],
            )
        })
        .collect();
    out.push_str(&bar_chart(
        "bytes",
        "Bytes on the wire per model, headers included",
        &bytes_series,
        &groups,
        &|v| format!("{} B", thousands(v as u64)),
    ));
    let _ = writeln!(out, "\n<h2>Logout to refusal</h2>");
    // Per series: the setup, and whether it is the other node's figure.
    let mut delay_series = Vec::new();
    let mut delay_sources: Vec<(&Setup, bool)> = Vec::new();
    for &s in &measured {
        delay_series.push(format!("same node ({})", s.title));
        delay_sources.push((s, false));
        if s.nodes > 1 {
            delay_series.push(format!("another node ({})", s.title));
            delay_sources.push((s, true));
        }
    }
    let groups: Vec<(&str, Vec<Option<f64>>)> = MODELS
        .iter()
        .map(|&name| {
            let values = delay_sources
                .iter()
                .map(|&(setup, other)| {
                    value(setup, name, &|m| {
                        if other {
                            m.revocation_ms.other_node_median
                        } else {
                            m.revocation_ms.same_node_median
                        }
                    })
                })
                .collect();
            (name, values)
        })
        .collect();
    out.push_str(&bar_chart(
        "revocation-delay",
        "Milliseconds from logout to the first refusal (median), per model",
        &delay_series,
        &groups,
        &fmt_ms,
    ));

    // The tables.
    for setup in &report.setups {
        let _ = writeln!(out, "\n<h2>{}</h2>", esc(&setup.title));
        match &setup.skipped {
            Some(why) => {
                let _ = writeln!(out, "<p class=\"skipped\">Skipped: {}</p>", esc(why));
            }
            None => {
                let rows: Vec<Vec<String>> = setup_rows(setup)
                    .into_iter()
                    .map(|(label, cells)| std::iter::once(label.to_owned()).chain(cells).collect())
                    .collect();
                html_table(&mut out, &["figure", "session", "token", "hybrid"], &rows);
            }
        }
    }
    let _ = writeln!(out, "<h2>{}</h2>", esc(AFTER_TITLE));
    let rows: Vec<Vec<String>> = report
        .after_logout
        .iter()
        .map(|r| after_cells(r).into())
        .collect();
    html_table(&mut out, &AFTER_HEADERS, &rows);
    if !report.notes.is_empty() {
        out.push_str("<h2>Notes</h2><ul>");
        for note in &report.notes {
            let _ = write!(out, "<li>{}</li>", esc(note));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_everything() {
        assert_eq!(
            esc(r#"<script>alert("x") & 'y'</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1 234 567");
        assert_eq!(fmt_ms(0.1234), "0.123 ms");
        assert_eq!(fmt_ms(12.345), "12.35 ms");
        assert_eq!(fmt_ms(1234.4), "1234 ms");
        assert_eq!(fmt_memory(Some(-300)), "-300 B");
        assert_eq!(fmt_memory(Some(20 * 1024)), "20.0 KiB");
    }

    #[test]
    fn markdown_cells_cannot_break_the_table() {
        assert_eq!(md_cell("a|b\nc"), "a\\|b c");
    }
}
