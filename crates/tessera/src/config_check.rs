//! `tessera config check`: the configuration `serve` would run with, every value with where it
//! came from — a default, the file, an environment variable or a flag — and secrets redacted.
//!
//! The sources are merged by figment exactly as for `serve` ([`Config::figment`]); figment keeps
//! the metadata of the source of each value, which is what is shown here.

use std::path::{Path, PathBuf};

use figment::Figment;
use serde::Serialize;
use serde_json::Value;

use crate::config::{Config, DEFAULT_FILE, DEFAULTS, FLAGS, Overrides};

/// What secrets are replaced with.
const REDACTED: &str = "<redacted>";

/// Where a value came from.
#[derive(Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum Source {
    Default,
    File { path: PathBuf },
    Environment { variable: String },
    Flag { flag: String },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File { path } => write!(f, "file {}", path.display()),
            Source::Environment { variable } => write!(f, "environment {variable}"),
            Source::Flag { flag } => write!(f, "flag {flag}"),
        }
    }
}

/// One value in force.
#[derive(Debug, Serialize)]
pub(crate) struct Entry {
    /// The dotted key, as in the file (`http.body_limit`).
    pub key: String,
    /// The value, secrets redacted; `null` when unset.
    pub value: Value,
    pub source: Source,
}

#[derive(Serialize)]
struct Report<'a> {
    /// The configuration file read, if any.
    file: Option<&'a Path>,
    values: &'a [Entry],
}

pub(crate) fn run(file: Option<&Path>, overrides: &Overrides, json: bool) -> anyhow::Result<()> {
    let figment = Config::figment(file, overrides)?;
    let config = Config::extract(figment.clone())?;
    let entries = effective(&config, &figment)?;
    let read = file.or_else(|| {
        Path::new(DEFAULT_FILE)
            .is_file()
            .then_some(Path::new(DEFAULT_FILE))
    });
    if json {
        return crate::app::print_json(&Report {
            file: read,
            values: &entries,
        });
    }
    match read {
        Some(path) => println!("# configuration file: {}", path.display()),
        None => println!("# configuration file: none ({DEFAULT_FILE} does not exist)"),
    }
    let lines: Vec<(String, &Source)> = entries
        .iter()
        .map(|e| {
            let value = match &e.value {
                Value::Null => "(unset)".to_owned(),
                v => v.to_string(),
            };
            (format!("{} = {value}", e.key), &e.source)
        })
        .collect();
    let width = lines
        .iter()
        .map(|(l, _)| l.chars().count())
        .filter(|&n| n <= 60)
        .max()
        .unwrap_or(0);
    for (line, source) in lines {
        println!("{line:<width$}  # {source}");
    }
    eprintln!("the configuration is valid");
    Ok(())
}

/// Every value of `config` (as serialized: what is in force), secrets redacted, with the source
/// figment recorded for it.
pub(crate) fn effective(config: &Config, figment: &Figment) -> anyhow::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    walk(
        &mut Vec::new(),
        &serde_json::to_value(config)?,
        figment,
        &mut entries,
    );
    Ok(entries)
}

fn walk(path: &mut Vec<String>, value: &Value, figment: &Figment, out: &mut Vec<Entry>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                path.push(k.clone());
                walk(path, v, figment, out);
                path.pop();
            }
        }
        leaf => out.push(Entry {
            key: path.join("."),
            value: redact(path, leaf),
            source: source(path, leaf, figment),
        }),
    }
}

/// Where the value at `path` came from: the metadata of the value there or, when the value in
/// force has no place of its own in the sources (a `playground = true` shown as
/// `playground.enabled`), of the nearest one above it that has.
fn source(path: &[String], value: &Value, figment: &Figment) -> Source {
    let metadata = (1..=path.len()).rev().find_map(|n| {
        // Unset values are not in the sources: only a value that is set looks upwards.
        if n < path.len() && value.is_null() {
            return None;
        }
        figment.find_metadata(&path[..n].join("."))
    });
    let Some(metadata) = metadata else {
        return Source::Default;
    };
    if metadata.name == DEFAULTS {
        return Source::Default;
    }
    if metadata.name == FLAGS {
        return Source::Flag {
            flag: format!("--{}", path[0].replace('_', "-")),
        };
    }
    if let Some(file) = metadata.source.as_ref().and_then(|s| s.file_path()) {
        return Source::File {
            path: file.to_owned(),
        };
    }
    if metadata.name.contains("environment") {
        return Source::Environment {
            variable: format!(
                "TESSERA_{}",
                path.iter()
                    .map(|k| k.to_ascii_uppercase())
                    .collect::<Vec<_>>()
                    .join("__")
            ),
        };
    }
    Source::File {
        path: PathBuf::from(&*metadata.name),
    }
}

/// Whether the value at `path` is a secret as a whole: the master key, the introspection clients'
/// secrets, and anything named as a password or secret.
fn is_secret(path: &[String]) -> bool {
    let last = path.last().map(String::as_str).unwrap_or_default();
    (path.len() >= 3 && path[0] == "tokens" && path[1] == "introspection_clients")
        || last == "master_key"
        || last.contains("password")
        || last.contains("secret")
}

/// Whether the value at `path` may hold a secret: a secret itself, or a URL or connection string
/// that can carry a password (`database`, `redis.*`, `postgres.*`, any `…url…`). Errors about such
/// a value do not repeat it.
pub(crate) fn may_hold_secret(path: &[String]) -> bool {
    let first = path.first().map(String::as_str).unwrap_or_default();
    is_secret(path)
        || matches!(first, "database" | "redis" | "postgres")
        || (first == "tokens" && path.get(1).is_some_and(|k| k == "introspection_clients"))
        || path.iter().any(|p| p.contains("url"))
}

fn redact(path: &[String], value: &Value) -> Value {
    if is_secret(path) && !value.is_null() {
        return Value::String(REDACTED.into());
    }
    redact_urls(value)
}

/// Every string that is a URL, with its password redacted, however deep.
fn redact_urls(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(redact_url(s)),
        Value::Array(items) => Value::Array(items.iter().map(redact_urls).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), redact_urls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `url` with its password replaced by `<redacted>`: the one in the user part
/// (`postgres://u:pw@h`, `redis://:pw@h`) and any query parameter named like a password or
/// secret (`?password=…`, `?sslpassword=…`). Anything else is returned as it is.
pub(crate) fn redact_url(url: &str) -> String {
    rewrite_url(url, Some(REDACTED))
}

/// `url` without its password (the user part's, and password query parameters dropped): what to
/// print in a command to run, the password being given another way.
pub(crate) fn url_without_password(url: &str) -> String {
    rewrite_url(url, None)
}

fn rewrite_url(url: &str, replacement: Option<&str>) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let mut out = url[..scheme_end].to_owned();
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    if let Some(r) = replacement {
                        out.push(':');
                        out.push_str(r);
                    }
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    let tail = &rest[authority_end..];
    let (before_fragment, fragment) = match tail.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (tail, None),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            let params: Vec<String> = query
                .split('&')
                .filter_map(|pair| {
                    let name = pair
                        .split('=')
                        .next()
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    if name.contains("password") || name.contains("secret") {
                        replacement
                            .map(|r| format!("{}={r}", pair.split('=').next().unwrap_or_default()))
                    } else {
                        Some(pair.to_owned())
                    }
                })
                .collect();
            if !params.is_empty() {
                out.push('?');
                out.push_str(&params.join("&"));
            }
        }
        None => out.push_str(before_fragment),
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_redacted_and_nothing_else() {
        for (url, redacted, without) in [
            (
                "postgres://tessera:s3cret@db:5432/auth",
                "postgres://tessera:<redacted>@db:5432/auth",
                "postgres://tessera@db:5432/auth",
            ),
            (
                "redis://:s3cret@127.0.0.1:6379/0",
                "redis://:<redacted>@127.0.0.1:6379/0",
                "redis://@127.0.0.1:6379/0",
            ),
            (
                "postgres://u@h/db?sslmode=require&password=s3cret&sslpassword=x#f",
                "postgres://u@h/db?sslmode=require&password=<redacted>&sslpassword=<redacted>#f",
                "postgres://u@h/db?sslmode=require#f",
            ),
            (
                "sqlite://tessera.db",
                "sqlite://tessera.db",
                "sqlite://tessera.db",
            ),
            ("memory", "memory", "memory"),
            (
                "http://user@example.com/a:b@c",
                "http://user@example.com/a:b@c",
                "http://user@example.com/a:b@c",
            ),
        ] {
            assert_eq!(redact_url(url), redacted, "{url}");
            assert_eq!(url_without_password(url), without, "{url}");
        }
    }

    #[test]
    fn secrets_are_found_by_their_keys() {
        let path = |p: &str| p.split('.').map(str::to_owned).collect::<Vec<_>>();
        assert!(is_secret(&path("tokens.master_key")));
        assert!(is_secret(&path("tokens.introspection_clients.gateway")));
        assert!(is_secret(&path("smtp.password")));
        assert!(!is_secret(&path("tokens.master_key_file")));
        assert!(!is_secret(&path("tokens.introspection_clients")));
    }
}
