//! Request ids: every request gets one, returned in `X-Request-Id`, carried by the request's
//! log span (`request_id`) and by the audit events it records (their detail's `request_id`).
//!
//! A request that comes through a trusted proxy (`trusted_proxies`, as for `X-Forwarded-For`)
//! keeps the `X-Request-Id` the proxy sent, when it is 1 to 128 characters of
//! `A-Z a-z 0-9 . _ : -`, so one id follows the request across the proxy's logs and ours. Any
//! other request gets a fresh random id: a client cannot choose what our logs and audit trail
//! record.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderName, HeaderValue, Response};
use ipnet::IpNet;
use tessera_core::RequestId;
use tokio::task::futures::TaskLocalFuture;

/// The header the id travels in, both ways.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Gives every request its id (see the module documentation) for the time it is handled
/// ([`RequestId::current`]) and puts it on the response. A plain service, not an axum
/// middleware: no boxed future, and the only allocation is a fresh id's header value.
#[derive(Clone)]
pub(crate) struct RequestIdLayer {
    pub(crate) trusted_proxies: Arc<[IpNet]>,
}

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = RequestIds<S>;

    fn layer(&self, inner: S) -> RequestIds<S> {
        RequestIds {
            inner,
            trusted_proxies: Arc::clone(&self.trusted_proxies),
        }
    }
}

/// See [`RequestIdLayer`].
#[derive(Clone)]
pub(crate) struct RequestIds<S> {
    inner: S,
    trusted_proxies: Arc<[IpNet]>,
}

impl<S, B> tower::Service<Request> for RequestIds<S>
where
    S: tower::Service<Request, Response = Response<B>>,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = WithRequestId<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let (id, value) = match self.trusted_id(&request) {
            Some(kept) => kept,
            None => {
                let id = RequestId::random();
                if request.headers().contains_key(X_REQUEST_ID) {
                    // Nothing downstream may mistake the client's choice for the id.
                    request.headers_mut().remove(X_REQUEST_ID);
                }
                (id, HeaderValue::from_bytes(id.as_bytes()).ok())
            }
        };
        // The span is made when the inner service is called: the id must be current then too.
        let inner = id.sync_scope(|| self.inner.call(request));
        WithRequestId {
            inner: id.scope(inner),
            header: value,
        }
    }
}

impl<S> RequestIds<S> {
    /// The request's own `X-Request-Id`, when a trusted proxy sent it and it is well-formed.
    fn trusted_id(&self, request: &Request) -> Option<(RequestId, Option<HeaderValue>)> {
        if self.trusted_proxies.is_empty() {
            return None;
        }
        let value = request.headers().get(X_REQUEST_ID)?;
        let ConnectInfo(peer) = request.extensions().get::<ConnectInfo<SocketAddr>>()?;
        if !crate::client_ip::is_trusted_proxy(&self.trusted_proxies, peer.ip()) {
            return None;
        }
        let id = RequestId::parse(value.as_bytes())?;
        Some((id, Some(value.clone())))
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future, polled with the request's id current; its response gets the
    /// `X-Request-Id` header.
    pub(crate) struct WithRequestId<F> {
        #[pin]
        inner: TaskLocalFuture<RequestId, F>,
        header: Option<HeaderValue>,
    }
}

impl<F, B, E> Future for WithRequestId<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match this.inner.poll(cx) {
            Poll::Ready(Ok(response)) => response,
            other => return other,
        };
        if let Some(value) = this.header.take() {
            response.headers_mut().insert(X_REQUEST_ID, value);
        }
        Poll::Ready(Ok(response))
    }
}

/// The span every request is handled in (`tower_http`'s `TraceLayer`): method and path (never
/// the query, which may carry what logs should not), at DEBUG, so that it costs nothing at the
/// default log level. The request id is not a field of it: the server's log formatter adds the
/// id of the request being served to every line, whatever its level.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RequestSpan;

impl<B> tower_http::trace::MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &axum::http::Request<B>) -> tracing::Span {
        tracing::debug_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
        )
    }
}
