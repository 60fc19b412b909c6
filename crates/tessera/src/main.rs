//! `tessera`: the authentication server's command line.
#![forbid(unsafe_code)]

/// mimalloc rather than the system allocator: a request allocates and frees dozens of small
/// buffers on whichever worker thread runs it, which glibc's allocator serves at several times
/// the cost (measured in docs/benchmarks.md). A host application that embeds the library picks
/// its own allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tessera::cli_main()
}
