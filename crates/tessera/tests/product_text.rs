//! The product stands alone: nothing a user reads — the README and docs/, every page of the CLI's
//! help, the files `tessera init` writes, the pages and documents the server serves — sends them
//! to a file they do not have. The team's own planning notes live outside the repository; naming
//! one of them in product text is the mistake this test catches.

mod harness;

use std::path::{Path, PathBuf};

use harness::{NO_ENV, Node, every_init_answer, run};

/// Names of files that exist only beside the repository, never in a user's checkout.
const OUTSIDE: [&str; 4] = ["seed.md", "design.md", "conventions.md", "../shared"];

fn check(what: &str, text: &str, found: &mut Vec<String>) {
    // ASCII case folding keeps every byte where it was, so offsets into `lower` fit `text`.
    let lower = text.to_ascii_lowercase();
    for name in OUTSIDE {
        if let Some(at) = lower.find(name) {
            let start = lower[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = lower[at..].find('\n').map_or(lower.len(), |i| at + i);
            let line = format!("{what}: {:?}", &text[start..end]);
            if !found.contains(&line) {
                found.push(line);
            }
        }
    }
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every Markdown file of the repository (README, docs/, examples, benches), and every file
/// under docs/ that is text.
fn documents(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(
                name.as_str(),
                "target" | ".git" | "node_modules" | "corpus" | "artifacts"
            ) {
                documents(&path, out);
            }
        } else if name.ends_with(".md")
            || (path.starts_with(repository().join("docs"))
                && std::fs::read_to_string(&path).is_ok())
        {
            out.push(path);
        }
    }
}

#[test]
fn documents_name_no_file_outside_the_repository() {
    let mut files = Vec::new();
    documents(&repository(), &mut files);
    let root = repository().canonicalize().unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            f.canonicalize()
                .unwrap()
                .strip_prefix(&root)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    for expected in ["README.md", "docs/choosing.md", "docs/benchmarks.md"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not found among {names:?}"
        );
    }
    let mut found = Vec::new();
    for (file, name) in files.iter().zip(&names) {
        check(name, &std::fs::read_to_string(file).unwrap(), &mut found);
    }
    assert!(found.is_empty(), "{found:#?}");
}

/// `tessera [SUB…] --help`, and then each subcommand it lists.
fn help_pages(path: Vec<String>, out: &mut Vec<(String, String)>) {
    let args: Vec<&str> = path.iter().map(String::as_str).chain(["--help"]).collect();
    let output = run(Path::new("."), &args, NO_ENV);
    assert!(output.status.success(), "tessera {args:?} failed");
    let text = String::from_utf8(output.stdout).unwrap();
    let mut in_commands = false;
    let mut subcommands = Vec::new();
    for line in text.lines() {
        if line == "Commands:" {
            in_commands = true;
        } else if in_commands {
            match line
                .strip_prefix("  ")
                .and_then(|l| l.split_whitespace().next())
            {
                Some(name) if name != "help" => subcommands.push(name.to_owned()),
                Some(_) => {}
                None => in_commands = false,
            }
        }
    }
    out.push((format!("tessera {}", args.join(" ")), text));
    for sub in subcommands {
        let mut next = path.clone();
        next.push(sub);
        help_pages(next, out);
    }
}

#[test]
fn the_cli_help_names_no_file_outside_the_repository() {
    let mut pages = Vec::new();
    help_pages(Vec::new(), &mut pages);
    for expected in [
        "tessera init --help",
        "tessera compare --help",
        "tessera serve --help",
    ] {
        assert!(
            pages.iter().any(|(name, _)| name == expected),
            "{expected} missing: {:?}",
            pages.iter().map(|(n, _)| n).collect::<Vec<_>>()
        );
    }
    let mut found = Vec::new();
    for (name, text) in &pages {
        check(name, text, &mut found);
    }
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn files_init_writes_name_no_file_outside_the_repository() {
    let mut found = Vec::new();
    for args in every_init_answer() {
        let dir = tempfile::tempdir().unwrap();
        let out = run(dir.path(), &args, NO_ENV);
        assert!(out.status.success());
        let what = args.join(" ");
        check(&what, &String::from_utf8_lossy(&out.stderr), &mut found);
        let written = std::fs::read_to_string(dir.path().join("tessera.toml")).unwrap();
        check(&format!("{what}: tessera.toml"), &written, &mut found);
    }
    assert!(found.is_empty(), "{found:#?}");
}

#[tokio::test]
async fn served_pages_name_no_file_outside_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let attacker = format!("127.0.0.1:{}", harness::free_port());
    let server = Node::start(
        dir.path(),
        &["--database", "memory"],
        &[("TESSERA_PLAYGROUND__ATTACKER_LISTEN", attacker.as_str())],
    );
    let client = reqwest::Client::new();
    let mut found = Vec::new();
    let own = [
        "/",
        "/playground.js",
        "/playground.css",
        "/playground/injected.js",
        "/openapi.json",
    ]
    .map(|path| server.url(path));
    // The playground's attacker page, on its own port.
    let attacker_pages = ["/", "/attacker.js"].map(|path| format!("http://{attacker}{path}"));
    for url in own.into_iter().chain(attacker_pages) {
        let response = client.get(&url).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        check(&url, &response.text().await.unwrap(), &mut found);
    }
    assert!(found.is_empty(), "{found:#?}");
}
