//! `tessera`: the authentication server's command line.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    tessera::cli_main()
}
