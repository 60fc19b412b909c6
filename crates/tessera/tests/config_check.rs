//! `tessera::check_config`: configuration text checked as `serve` reads it (also the fuzz
//! target `config`'s entry point).

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
