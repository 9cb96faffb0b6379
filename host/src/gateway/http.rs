//! The gateway over streamable HTTP: rmcp's streamable HTTP service at `/mcp` on an axum
//! server. rmcp checks `Host` (DNS rebinding) and `Origin` and bounds the request body;
//! this module adds the optional bearer token and picks the defaults: loopback hosts,
//! loopback browser origins, and bodies up to the size stdio accepts.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use subtle::ConstantTimeEq as _;
use tokio_util::sync::CancellationToken;

use super::Gateway;

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
    /// `Host` values accepted besides the loopback names (`localhost`, `127.0.0.1`,
    /// `::1`), e.g. the server's own name when it listens beyond loopback.
    pub allowed_hosts: Vec<String>,
    /// Browser origins accepted besides loopback ones (`http://localhost:*`, ...).
    /// Requests without `Origin` (not from a browser) are always accepted.
    pub allowed_origins: Vec<String>,
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
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    hosts.extend(options.allowed_hosts.iter().cloned());
    let mut origins: Vec<String> = LOOPBACK_ORIGINS.map(String::from).to_vec();
    origins.extend(options.allowed_origins.iter().cloned());
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins(origins)
        .with_max_request_body_bytes(MAX_BODY_BYTES)
        .with_cancellation_token(shutdown);
    let gateway = gateway.with_transport("tcp");
    let service = StreamableHttpService::new(
        move || Ok(gateway.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let router = axum::Router::new().route_service(PATH, service);
    match &options.token {
        Some(token) => router.layer(middleware::from_fn_with_state(
            Arc::<[u8]>::from(token.as_bytes()),
            require_token,
        )),
        None => router,
    }
}

/// Refuses a request without the configured bearer token (compared in constant time).
async fn require_token(State(token): State<Arc<[u8]>>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::as_bytes);
    match presented {
        Some(presented) if bool::from(presented.ct_eq(&token)) => next.run(request).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required (the server's WW_AUTH_TOKEN)",
        )
            .into_response(),
    }
}

/// Serves `gateway` over streamable HTTP on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Gateway,
    options: &HttpOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = router(gateway, options, shutdown.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("the HTTP server failed")
}

/// Binds `addr`, saying why when it cannot.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}
