//! The example application on 127.0.0.1:3000 (or `LISTEN`), with Tessera's routes under `/auth`
//! and its data in `app.db`. Stops gracefully on Ctrl-C or SIGTERM.

use anyhow::Context;
use tessera::Tessera;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    let tessera = Tessera::builder()
        .sqlite("app.db")
        .master_key_file("app.key")
        .public_url(&format!("http://localhost:{}", addr.port()))
        .mount("/auth")
        .build()
        .await?;
    let app = embedded_axum::app(&tessera);
    println!("listening on http://localhost:{}", addr.port());
    tessera.serve(listener, app, stop_signal()).await?;
    tessera.shutdown().await;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return interrupt.await.unwrap_or(()),
        };
    tokio::select! {
        _ = interrupt => {},
        _ = terminate.recv() => {},
    }
}
