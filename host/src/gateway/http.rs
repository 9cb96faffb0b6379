//! The gateway over streamable HTTP: rmcp's streamable HTTP service at `/mcp` on an axum
//! server. rmcp checks `Host` (DNS rebinding) and `Origin` and bounds the request body;
//! this module adds the optional bearer token and picks the defaults: loopback hosts,
//! loopback browser origins, and bodies up to the size stdio accepts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as AutoBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use subtle::ConstantTimeEq as _;
use tokio_util::sync::CancellationToken;

use super::sessions::{self, SessionLimits, Sessions, TokenIdentity};
use super::{Gateway, InFlight};
use crate::session::TokenBindings;

/// The path the MCP endpoint is served at.
pub const PATH: &str = "/mcp";

/// The largest request body accepted: the same as a stdio line (rmcp's limit), so a call
/// too big for a tool gets the tool's own validation error on either transport.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How the HTTP endpoint is exposed.
#[derive(Clone, Debug, Default)]
pub struct HttpOptions {
    /// When set, every request must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Tokens bound to sessions (the configuration's `tokens` file): a request carrying
    /// one of them is served in its session. With either this or `token`, a request
    /// must carry one of the tokens.
    pub tokens: Option<Arc<TokenBindings>>,
    /// `Host` values accepted besides the loopback names (`localhost`, `127.0.0.1`,
    /// `::1`), e.g. the server's own name when it listens beyond loopback.
    pub allowed_hosts: Vec<String>,
    /// Browser origins accepted besides loopback ones (`http://localhost:*`, ...).
    /// Requests without `Origin` (not from a browser) are always accepted.
    pub allowed_origins: Vec<String>,
    /// Bounds on the open MCP sessions.
    pub sessions: SessionLimits,
}

/// The loopback origins a local browser-based client (the MCP Inspector, say) has.
const LOOPBACK_ORIGINS: [&str; 6] = [
    "http://localhost:*",
    "http://127.0.0.1:*",
    "http://[::1]:*",
    "https://localhost:*",
    "https://127.0.0.1:*",
    "https://[::1]:*",
];

/// The axum router serving `gateway` at [`PATH`], stopping its sessions on `shutdown`.
pub fn router(
    gateway: Gateway,
    options: &HttpOptions,
    shutdown: CancellationToken,
) -> axum::Router {
    app(gateway, options, shutdown, InFlight::default())
}

/// [`router`], counting the requests being answered in `in_flight`.
fn app(
    gateway: Gateway,
    options: &HttpOptions,
    shutdown: CancellationToken,
    in_flight: InFlight,
) -> axum::Router {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    hosts.extend(options.allowed_hosts.iter().cloned());
    let mut origins: Vec<String> = LOOPBACK_ORIGINS.map(String::from).to_vec();
    origins.extend(options.allowed_origins.iter().cloned());
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins(origins)
        .with_max_request_body_bytes(MAX_BODY_BYTES)
        .with_cancellation_token(shutdown.clone());
    let mut manager = LocalSessionManager::default();
    manager.session_config.keep_alive = Some(options.sessions.idle_timeout);
    let manager = Arc::new(manager);
    let bounds = Sessions::new(options.sessions, manager.clone(), in_flight, shutdown);
    if let Some(metrics) = gateway.memory.host().telemetry().metrics() {
        bounds.observe(metrics);
    }
    let gateway = gateway.with_transport("tcp").with_sessions(bounds.clone());
    let service = StreamableHttpService::new(move || Ok(gateway.clone()), manager, config);
    let router = axum::Router::new()
        .route_service(PATH, service)
        .layer(middleware::from_fn(session_ended))
        .layer(middleware::from_fn_with_state(bounds, sessions::bound))
        .layer(middleware::from_fn(refuse_declared_oversize));
    if options.token.is_none() && options.tokens.is_none() {
        return router;
    }
    let accepted = Arc::new(Accepted {
        token: options.token.as_ref().map(|t| Arc::from(t.as_bytes())),
        tokens: options.tokens.clone(),
    });
    router.layer(middleware::from_fn_with_state(accepted, require_token))
}

/// A session ended by `DELETE` is answered `204 No Content`: rmcp answers `202
/// Accepted`, which the official SDKs do not expect of a DELETE (the Python SDK logs
/// "Session termination failed: 202" every time it closes a session).
async fn session_ended(request: Request, next: Next) -> Response {
    let delete = request.method() == axum::http::Method::DELETE;
    let mut response = next.run(request).await;
    if delete && response.status() == StatusCode::ACCEPTED {
        *response.status_mut() = StatusCode::NO_CONTENT;
        *response.body_mut() = axum::body::Body::empty();
    }
    response
}

/// A body whose declared `Content-Length` is over [`MAX_BODY_BYTES`] is refused at once,
/// before any of it is read (rmcp's own limit reads up to the limit first, which costs
/// 16 MiB of memory a request and, with the rest unread when the connection closes,
/// can make the client's TCP stack drop the answer). The connection is closed after the
/// answer, since the unread body would otherwise be parsed as the next request.
async fn refuse_declared_oversize(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > MAX_BODY_BYTES as u64 => (
            StatusCode::PAYLOAD_TOO_LARGE,
            [(header::CONNECTION, "close")],
            format!("Payload Too Large: request body exceeds {MAX_BODY_BYTES} bytes"),
        )
            .into_response(),
        _ => next.run(request).await,
    }
}

/// The bearer tokens a server accepts.
struct Accepted {
    /// `WW_AUTH_TOKEN`: the server's own session.
    token: Option<Arc<[u8]>>,
    /// Tokens bound to sessions.
    tokens: Option<Arc<TokenBindings>>,
}

/// Refuses a request without an accepted bearer token (compared in constant time); a
/// token bound to a session puts that session in the request's extensions, where the
/// gateway finds it.
async fn require_token(
    State(accepted): State<Arc<Accepted>>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    if let Some(presented) = presented {
        let server_token = accepted
            .token
            .as_ref()
            .is_some_and(|token| bool::from(presented.as_bytes().ct_eq(token)));
        if server_token {
            request
                .extensions_mut()
                .insert(TokenIdentity(Arc::from("WW_AUTH_TOKEN")));
            return next.run(request).await;
        }
        if let Some(session) = accepted
            .tokens
            .as_ref()
            .and_then(|tokens| tokens.session_for(&presented))
        {
            request
                .extensions_mut()
                .insert(TokenIdentity(Arc::from(session.id.to_string())));
            request.extensions_mut().insert(session);
            return next.run(request).await;
        }
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a bearer token is required (WW_AUTH_TOKEN, or one of the configuration's tokens file)",
    )
        .into_response()
}

/// Why the HTTP transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address cannot be listened on.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How long a graceful stop waits for the calls in flight before it cancels them.
pub const DRAIN: Duration = Duration::from_secs(10);

/// How long a client may take to send a request's headers (also: how long a kept-alive
/// connection may wait idle for its next request), and to send each part of a body.
pub const SLOW_CLIENT: Duration = Duration::from_secs(10);

/// Open connections at most; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 4096;

/// Serves `gateway` over streamable HTTP on `listener` until `shutdown` is cancelled,
/// then stops gracefully: no new connection or request is taken, the requests in flight
/// finish (for up to [`DRAIN`]; those still running then are cancelled), and the
/// sessions' streams end.
///
/// Our own accept loop on hyper rather than `axum::serve`, which gives hyper no timer:
/// without one a client that sends half a request's headers, or half its body, holds the
/// connection forever. Here headers must arrive within [`SLOW_CLIENT`], a body must not
/// stall longer than that between its parts, and at most [`MAX_CONNECTIONS`] are open.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Gateway,
    options: &HttpOptions,
    shutdown: CancellationToken,
) -> Result<(), HttpError> {
    let sessions_end = CancellationToken::new();
    let in_flight = InFlight::default();
    let app = app(gateway, options, sessions_end.clone(), in_flight.clone()).layer(
        tower_http::timeout::RequestBodyTimeoutLayer::new(SLOW_CLIENT),
    );
    let stopping = shutdown.clone();
    tokio::spawn(async move {
        stopping.cancelled().await;
        let calls = in_flight.count();
        if calls > 0 {
            tracing::info!("stopping: waiting for {calls} requests in flight (at most {DRAIN:?})");
        }
        if !in_flight.drained(DRAIN).await {
            tracing::warn!(
                "stopping: {} requests still running after {DRAIN:?} are cancelled",
                in_flight.count()
            );
        }
        sessions_end.cancel();
    });
    let mut builder = AutoBuilder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(SLOW_CLIENT);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                // Closed: never, nothing closes it.
                Err(_) => break,
            },
        };
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("HTTP connection: {e}");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Binds `addr`, saying why when it cannot.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, HttpError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}
