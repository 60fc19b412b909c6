//! Tessera's HTTP surface (axum): routers per login model, extractors, layers, OpenAPI.
//!
//! ```no_run
//! # async fn run(state: tessera_http::AppState) {
//! let app = tessera_http::router(state);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.unwrap();
//! let header_timeout = std::time::Duration::from_secs(10);
//! tessera_http::serve(listener, app, header_timeout, std::future::pending()).await.unwrap();
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod client_ip;
pub mod csrf;
pub mod extract;
pub mod forward_auth;
pub mod json;
mod layers;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod request_id;
pub mod routes;
pub mod state;

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use problem::{ApiError, Problem};
pub use routes::playground::attacker_router;
pub use state::{AppState, HttpConfig, IntrospectionClient, PlaygroundConfig, Timeouts, origin_of};

/// Every route of the server, with its layers, and `/openapi.json` generated from the same
/// handlers, at the root (see [`routes`] to give them to an application's router).
pub fn router(state: AppState) -> Router {
    routes(state)
}

/// [`router`]'s routes as a router of any state type `S`, to merge into an application's router
/// (or nest under a path): they carry their own state, so `S` is whatever the application uses.
pub fn routes<S: Clone + Send + Sync + 'static>(state: AppState) -> Router<S> {
    let (api, doc) = OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(routes::ops::healthz))
        .routes(routes!(routes::ops::readyz))
        .routes(routes!(routes::users::register))
        .routes(routes!(routes::me::me))
        .routes(routes!(routes::verify::verify))
        .routes(routes!(routes::session::login))
        .routes(routes!(routes::session::current, routes::session::logout))
        .routes(routes!(routes::session::csrf_token))
        .routes(routes!(
            routes::session::get_data,
            routes::session::patch_data
        ))
        .routes(routes!(routes::token::login))
        .routes(routes!(routes::token::refresh))
        .routes(routes!(routes::token::revoke))
        .routes(routes!(routes::token::introspect))
        .routes(routes!(routes::token::jwks))
        .routes(routes!(routes::token::metadata))
        .routes(routes!(routes::revocations::stream))
        .routes(routes!(routes::admin::list_keys))
        .routes(routes!(routes::admin::rotate_key))
        .routes(routes!(routes::admin::retire_key))
        .routes(routes!(routes::hybrid::login))
        .routes(routes!(routes::hybrid::current, routes::hybrid::logout))
        .routes(routes!(routes::hybrid::refresh))
        .routes(routes!(routes::me::list, routes::me::end_others))
        .routes(routes!(routes::me::end_one))
        .routes(routes!(routes::me::change_password))
        .routes(routes!(routes::me::delete_account))
        .routes(routes!(routes::account::request_recovery))
        .routes(routes!(routes::account::complete_recovery))
        .routes(routes!(routes::account::request_verification))
        .routes(routes!(routes::account::verify_email))
        .routes(routes!(routes::account::change_email))
        .routes(routes!(routes::second_factor::complete_login))
        .routes(routes!(
            routes::second_factor::status,
            routes::second_factor::begin,
            routes::second_factor::remove
        ))
        .routes(routes!(routes::second_factor::confirm))
        .routes(routes!(routes::second_factor::regenerate_recovery_codes))
        .routes(routes!(routes::second_factor::step_up))
        .routes(routes!(routes::second_factor::complete_login_passkey))
        .routes(routes!(routes::second_factor::login_passkey_options))
        .routes(routes!(routes::second_factor::step_up_passkey_options))
        .routes(routes!(routes::second_factor::step_up_passkey))
        .routes(routes!(routes::passkey::list, routes::passkey::register))
        .routes(routes!(routes::passkey::registration_options))
        .routes(routes!(routes::passkey::rename, routes::passkey::remove))
        .routes(routes!(routes::passkey::login_options))
        .routes(routes!(routes::passkey::login))
        .routes(routes!(routes::passkey::admin_remove_all))
        .routes(routes!(routes::admin::resend_verification))
        .routes(routes!(routes::admin::list_users))
        .routes(routes!(routes::admin::get_user, routes::admin::delete_user))
        .routes(routes!(routes::admin::disable_user))
        .routes(routes!(routes::admin::enable_user))
        .routes(routes!(routes::admin::set_roles))
        .routes(routes!(routes::admin::user_sessions))
        .routes(routes!(routes::admin::force_logout))
        .routes(routes!(routes::admin::remove_totp))
        .routes(routes!(routes::admin::events))
        .split_for_parts();
    let openapi_json = openapi::render(doc, state.cookies(), &state.base_path());
    // Installed now, so counters recorded by the core from the first request on are kept.
    let _ = metrics::handle();
    let api = api.route_layer(axum::middleware::from_fn(metrics::track));
    let api = if state.tokens().dpop().config().nonce {
        api.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            extract::dpop::send_nonce,
        ))
    } else {
        api
    };
    let body_limit = state.0.config.body_limit;
    let cors = layers::cors(&state.0.trusted_origins[1..]);
    let timeouts = state.0.config.timeouts;
    let https = state.0.https;
    let trusted_proxies = state.0.config.trusted_proxies.clone();
    let mut app = api.route(
        "/openapi.json",
        axum::routing::get(move || openapi::serve(openapi_json.clone())),
    );
    // The pages recovery and verification mails link to.
    {
        use axum::routing::get;
        use routes::pages;
        app = app
            .route("/account/recovery", get(pages::recovery))
            .route("/account/verify", get(pages::verify))
            .route("/account/account.js", get(pages::script))
            .route("/account/account.css", get(pages::style));
    }
    // The playground's routes exist only when it is on: otherwise they are 404s like any other
    // unknown path.
    if state.playground_on() {
        use axum::routing::get;
        use routes::playground;
        app = app
            .route("/", get(playground::page))
            .route("/playground.js", get(playground::script))
            .route("/playground.css", get(playground::style))
            .route("/playground/injected.js", get(playground::injected))
            .route("/playground/held", get(playground::held))
            .route("/playground/attacks", get(playground::attacks));
    }
    let attack_log = state.0.attack_log.clone();
    // Every layer in one tower stack, given to the router once: each `Router::layer` wraps every
    // route in another boxed service that is cloned for each request, and nine of them cost
    // nine boxes per request where one will do. Listed from the outside in.
    let stack = tower::ServiceBuilder::new()
        // The request id, then the trace span that carries it.
        .layer(request_id::RequestIdLayer {
            trusted_proxies: trusted_proxies.into(),
        })
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(request_id::RequestSpan),
        )
        // The playground's recorder sees what the attacker page sent (CORS preflights too) and
        // what it got back.
        .option_layer(attack_log.map(routes::playground::RecordAttacksLayer))
        .layer(axum::middleware::map_response::<_, ()>(
            move |r: axum::response::Response| layers::security_headers(r, https),
        ))
        .layer(cors)
        .layer(axum::middleware::map_response::<_, ()>(
            layers::problem_for_bare_errors,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            layers::panic_response,
        ))
        // Any request that takes too long; a client that trickles its body is cut off.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeouts.request,
        ))
        .layer(RequestBodyTimeoutLayer::new(timeouts.body))
        .layer(DefaultBodyLimit::max(body_limit));
    app.fallback(layers::not_found)
        .method_not_allowed_fallback(layers::method_not_allowed)
        .with_state(state)
        .layer(stack)
}

/// The management surface, for a separate listener that only operators reach
/// (`http.management_listen`): `/metrics` (Prometheus). Never part of [`router`], so the public
/// port tells nobody how the server is used.
pub fn management_router() -> Router {
    // Installed now, so counters recorded from the first request on are kept.
    let _ = metrics::handle();
    Router::new()
        .route("/metrics", axum::routing::get(metrics::render))
        .fallback(layers::not_found)
        .layer(axum::middleware::map_response::<_, ()>(
            layers::problem_for_bare_errors,
        ))
}

/// Serves `app` on `listener` until `shutdown` completes, then finishes the requests in flight.
/// The client's socket address is available to handlers (sessions record it). A connection that
/// has not sent a request's whole head within `header_timeout` is closed (a client trickling its
/// headers holds nothing for long), and so is one that is idle when the shutdown comes.
///
/// `listener` is any [`axum::serve::Listener`] with socket addresses: a `TcpListener`, or one
/// that completes a TLS handshake first.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    header_timeout: std::time::Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    L::Io: Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    // HTTP/2 has no header-read timer: a peer that stops answering pings is cut off instead, so
    // dead or stalled HTTP/2 connections do not pile up either.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(header_timeout))
        .keep_alive_timeout(header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(
            move |request: axum::http::Request<hyper::body::Incoming>| {
                let mut request = request.map(axum::body::Body::new);
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                tower::ServiceExt::oneshot(app.clone(), request)
            },
        );
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
