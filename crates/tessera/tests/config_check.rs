//! `tessera::check_config`: configuration text checked as `serve` reads it (also the fuzz
//! target `config`'s entry point); and `tessera config check`, the configuration in force with the
//! source of every value.

use tessera::check_config;

#[test]
fn an_empty_file_is_the_embedded_default() {
    assert_eq!(check_config(""), Ok(()));
}

#[test]
fn a_valid_file_passes() {
    let text = r#"
        database = "sqlite://tessera.db"
        public_url = "https://auth.example.com"
        [sessions]
        idle_timeout = "20m"
        [tokens]
        revocation = "allowlist"
    "#;
    assert_eq!(check_config(text), Ok(()));
}

#[test]
fn a_wrong_type_names_the_key() {
    let err = check_config("[sessions]\nidle_timeout = 5\n").unwrap_err();
    assert!(err.contains("idle_timeout"), "{err}");
}

#[test]
fn a_value_types_alone_allow_is_refused_naming_the_key() {
    let err = check_config("database = \"mysql://db\"\n").unwrap_err();
    assert!(err.contains("database"), "{err}");
    let err = check_config("[sessions]\nstore = \"redis\"\n").unwrap_err();
    assert!(err.contains("redis.url"), "{err}");
}

#[test]
fn text_that_is_not_toml_is_an_error_not_a_panic() {
    for text in [
        "[",
        "a = ",
        "= 1",
        "\u{0}",
        "[tokens]\n[tokens]\n",
        "x = 1979-05-27T07:32:00Z",
    ] {
        let _ = check_config(text);
    }
    assert!(check_config("[").is_err());
}

mod harness;

/// 32 bytes of base64: a master key the configuration accepts.
const MASTER_KEY: &str = "c2VjcmV0LW1hc3Rlci1rZXktMzItYnl0ZXMtbG9uZyE=";

/// `tessera config check` names the source of every value: the file (with its path), the
/// environment (with the variable), a flag, or the default; and it redacts every secret.
#[test]
fn config_check_names_every_source_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tessera.toml"),
        "[http]\nbody_limit = 2048\n\
         [sessions]\nstore = \"redis\"\n\
         [redis]\nurl = \"redis://:redis-secret-pw@127.0.0.1:6379/0\"\n\
         [tokens.introspection_clients]\ngateway = \"introspection-secret-0123\"\n",
    )
    .unwrap();
    let env = [
        ("TESSERA_PUBLIC_URL", "https://auth.example.com"),
        ("TESSERA_TOKENS__MASTER_KEY", MASTER_KEY),
    ];
    let args = [
        "config",
        "check",
        "--database",
        "postgres://tessera:pg-secret-pw@127.0.0.1:5432/auth",
    ];
    let out = harness::run(dir.path(), &args, &env);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    for secret in [
        "redis-secret-pw",
        "pg-secret-pw",
        "introspection-secret-0123",
        MASTER_KEY,
    ] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} was printed:\n{stdout}{stderr}"
        );
    }
    let line = |key: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in:\n{stdout}"))
            .to_owned()
    };
    assert!(line("http.body_limit").contains("2048"), "{stdout}");
    assert!(
        line("http.body_limit").contains("# file tessera.toml"),
        "{stdout}"
    );
    assert!(
        line("public_url").contains("# environment TESSERA_PUBLIC_URL"),
        "{stdout}"
    );
    assert!(line("database").contains("# flag --database"), "{stdout}");
    assert!(
        line("database").contains("postgres://tessera:<redacted>@127.0.0.1:5432/auth"),
        "{stdout}"
    );
    assert!(line("listen").contains("# default"), "{stdout}");
    assert!(line("tokens.master_key").contains("<redacted>"), "{stdout}");
    assert!(
        line("tokens.master_key").contains("# environment TESSERA_TOKENS__MASTER_KEY"),
        "{stdout}"
    );
    assert!(
        line("tokens.introspection_clients.gateway").contains("<redacted>"),
        "{stdout}"
    );

    // The same as one JSON document.
    let out = harness::run(dir.path(), &[&args[..], &["--json"]].concat(), &env);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = report.to_string();
    assert!(
        !text.contains("pg-secret-pw") && !text.contains(MASTER_KEY),
        "{text}"
    );
    let entry = |key: &str| {
        report["values"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["key"] == key)
            .unwrap_or_else(|| panic!("no {key} in {text}"))
            .clone()
    };
    assert_eq!(
        entry("http.body_limit")["source"],
        serde_json::json!({"kind": "file", "path": "tessera.toml"})
    );
    assert_eq!(entry("http.body_limit")["value"], 2048);
    assert_eq!(
        entry("public_url")["source"],
        serde_json::json!({"kind": "environment", "variable": "TESSERA_PUBLIC_URL"})
    );
    assert_eq!(
        entry("database")["source"],
        serde_json::json!({"kind": "flag", "flag": "--database"})
    );
    assert_eq!(
        entry("listen")["source"],
        serde_json::json!({"kind": "default"})
    );
    assert_eq!(
        entry("redis.url")["value"],
        "redis://:<redacted>@127.0.0.1:6379/0"
    );
    assert_eq!(report["file"], "tessera.toml");
}

/// An invalid value: status 1, a message naming the key and where its value came from, and
/// nothing on standard output.
#[test]
fn config_check_fails_naming_the_key_of_an_invalid_value() {
    let dir = tempfile::tempdir().unwrap();
    let out = harness::run(
        dir.path(),
        &["config", "check"],
        &[("TESSERA_HTTP__BODY_LIMIT", "10")],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http.body_limit"), "{err}");
    assert!(err.contains("TESSERA_"), "the environment is named: {err}");
    assert!(out.stdout.is_empty());

    std::fs::write(
        dir.path().join("tessera.toml"),
        "[sessions]\nidle_timeout = \"soon\"\n",
    )
    .unwrap();
    let out = harness::run(dir.path(), &["config", "check"], harness::NO_ENV);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sessions.idle_timeout"), "{err}");
    assert!(err.contains("tessera.toml"), "{err}");
    std::fs::remove_file(dir.path().join("tessera.toml")).unwrap();

    let out = harness::run(
        dir.path(),
        &["config", "check", "--database", "mysql://u:my-secret@db/x"],
        harness::NO_ENV,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("database") && err.contains("flag"), "{err}");
    assert!(!err.contains("my-secret"), "{err}");
}
