//! The one address a remote adapter may reach: its configured endpoint. The host
//! enforces it for TCP (`wasi:sockets`, checked on every connect) and for HTTP
//! (`wasi:http`, checked on every request), and gives each outgoing HTTP request a CLIENT
//! span and the W3C `traceparent` of that span.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::telemetry::Telemetry;
use crate::tracing_capability::{w3c, xray};

/// How long the start-up connectivity check waits for the endpoint.
pub const REACHABILITY_TIMEOUT: Duration = Duration::from_secs(3);

/// Connect timeout of an outgoing HTTP request that sets none.
pub const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time to the response's first byte (and between bytes) when the request sets none.
pub const HTTP_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(8);

/// Interfaces through which a component reaches the network; the host grants them only
/// towards a configured endpoint, so a component importing one has no use without it.
pub const NETWORK_INTERFACES: [&str; 3] = [
    "wasi:http/outgoing-handler@",
    "wasi:sockets/tcp@",
    "wasi:sockets/udp@",
];

/// Whether the component in `bytes` imports one of the [`NETWORK_INTERFACES`]: read from
/// its import section, without compiling it. A file wasmparser cannot read counts as
/// not reaching the network (compiling it reports the fault properly).
pub fn imports_network(bytes: &[u8]) -> bool {
    use wasmparser::Payload;
    // Only the outer component's imports say what it asks of the host: nested modules
    // and components are skipped by depth (each ends with its own `End`).
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(Payload::ComponentImportSection(imports)) if depth == 0 => {
                let reaches = imports.into_iter().flatten().any(|import| {
                    NETWORK_INTERFACES
                        .iter()
                        .any(|interface| import.name.name.starts_with(interface))
                });
                if reaches {
                    return true;
                }
            }
            Ok(Payload::ModuleSection { .. } | Payload::ComponentSection { .. }) => depth += 1,
            Ok(Payload::End(_)) => depth = depth.saturating_sub(1),
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Why an endpoint is not one the host can enforce.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// Not a URL at all.
    #[error("{url:?} is not a URL")]
    NotUrl {
        /// As written.
        url: String,
        /// The parser's complaint.
        #[source]
        source: http::uri::InvalidUri,
    },
    /// No `scheme://`.
    #[error("{0:?} has no scheme (http://, bolt://, ...)")]
    NoScheme(String),
    /// No host.
    #[error("{0:?} has no host")]
    NoHost(String),
    /// A user or password in it.
    #[error("{0:?}: credentials go in `secrets`, not in the endpoint")]
    Credentials(String),
    /// No port, and the scheme has no default.
    #[error("{0:?} needs a port")]
    NoPort(String),
}

/// Why an endpoint did not answer the start-up check.
#[derive(Debug, thiserror::Error)]
pub enum ReachError {
    /// Its host name does not resolve.
    #[error("cannot resolve {host}")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// It resolves to nothing.
    #[error("{0} resolves to no address")]
    NoAddress(String),
    /// The connection was refused or failed.
    #[error("{addr}")]
    Connect {
        /// The address tried last.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Nothing answered in time.
    #[error("{addr}: no answer within {REACHABILITY_TIMEOUT:?}")]
    Timeout {
        /// The address tried last.
        addr: SocketAddr,
    },
}

/// A configured endpoint: `scheme://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// As written in the configuration.
    pub url: String,
    /// `http`, `https`, `bolt`, ...
    pub scheme: String,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// The port (the scheme's default when not written).
    pub port: u16,
}

impl Endpoint {
    /// Parse `url`; it needs a scheme and a host, and a port unless the scheme has a
    /// known default.
    pub fn parse(url: &str) -> Result<Self, EndpointError> {
        let uri: http::Uri = url.parse().map_err(|source| EndpointError::NotUrl {
            url: url.to_owned(),
            source,
        })?;
        let scheme = uri
            .scheme_str()
            .ok_or_else(|| EndpointError::NoScheme(url.to_owned()))?
            .to_ascii_lowercase();
        let authority = uri
            .authority()
            .ok_or_else(|| EndpointError::NoHost(url.to_owned()))?;
        if authority.as_str().contains('@') {
            return Err(EndpointError::Credentials(url.to_owned()));
        }
        let default_port = match scheme.as_str() {
            "http" => Some(80),
            "https" => Some(443),
            "bolt" | "neo4j" => Some(7687),
            _ => None,
        };
        let port = authority
            .port_u16()
            .or(default_port)
            .ok_or_else(|| EndpointError::NoPort(url.to_owned()))?;
        Ok(Self {
            url: url.to_owned(),
            scheme,
            host: authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase(),
            port,
        })
    }

    /// Whether a request to `uri` goes to this endpoint (same host and port).
    pub fn admits(&self, uri: &http::Uri) -> bool {
        let Some(authority) = uri.authority() else {
            return false;
        };
        let scheme_port = match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        host.eq_ignore_ascii_case(&self.host)
            && authority.port_u16().unwrap_or(scheme_port) == self.port
    }

    /// The addresses the endpoint's host resolves to now.
    pub async fn addresses(&self) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .collect())
    }

    /// Whether a component may open a connection of kind `use_` to `addr`: only a TCP
    /// connection, only to an address of the endpoint (resolved again each time, so a
    /// changed DNS entry is followed).
    pub async fn allows(&self, addr: SocketAddr, use_: SocketAddrUse) -> bool {
        let allowed = match use_ {
            // What a client socket binds to before it connects: any local address, an
            // ephemeral port. It cannot listen or accept: binding alone serves nothing.
            SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
            SocketAddrUse::TcpConnect => match self.addresses().await {
                Ok(addresses) => addresses.contains(&addr),
                Err(_) => false,
            },
            _ => false,
        };
        if !allowed {
            tracing::warn!(
                "refused a component's {use_:?} to {addr}: not its endpoint {}",
                self.url
            );
        }
        allowed
    }

    /// Start-up check: a TCP connection to the endpoint opens within the timeout.
    pub async fn check_reachable(&self) -> Result<(), ReachError> {
        let addresses = self
            .addresses()
            .await
            .map_err(|source| ReachError::Resolve {
                host: self.host.clone(),
                source,
            })?;
        let mut last = ReachError::NoAddress(self.host.clone());
        for addr in addresses {
            match tokio::time::timeout(REACHABILITY_TIMEOUT, tokio::net::TcpStream::connect(addr))
                .await
            {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(source)) => last = ReachError::Connect { addr, source },
                Err(_) => last = ReachError::Timeout { addr },
            }
        }
        Err(last)
    }
}

/// The `wasi:http` policy of one component: requests only to its endpoint (none without
/// one), each a CLIENT span under the component's current span, `traceparent` injected.
pub struct HttpHooks {
    endpoint: Option<Arc<Endpoint>>,
    telemetry: Arc<Telemetry>,
    /// The innermost open span of the current request, set before each `wasi:http`
    /// call reaches these hooks.
    pub parent: Option<SpanContext>,
    /// The request's baggage entries, likewise.
    pub baggage: Vec<(String, String)>,
}

impl HttpHooks {
    /// The policy for a component allowed to reach `endpoint` (or nothing).
    pub fn new(endpoint: Option<Arc<Endpoint>>, telemetry: Arc<Telemetry>) -> Self {
        Self {
            endpoint,
            telemetry,
            parent: None,
            baggage: Vec::new(),
        }
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        _ = fut;
        let admitted = self
            .endpoint
            .as_ref()
            .is_some_and(|e| e.admits(request.uri()));
        if !admitted {
            tracing::warn!(
                "refused an outgoing request to {}: not the component's endpoint",
                request.uri().authority().map_or("?", |a| a.as_str())
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        // A request the component did not bound is bounded here: a hung server costs the
        // call this long, not the component's whole deadline.
        let mut options = options.unwrap_or_default();
        options.connect_timeout.get_or_insert(HTTP_CONNECT_TIMEOUT);
        options
            .first_byte_timeout
            .get_or_insert(HTTP_FIRST_BYTE_TIMEOUT);
        options
            .between_bytes_timeout
            .get_or_insert(HTTP_FIRST_BYTE_TIMEOUT);
        let options = Some(options);
        let method = request.method().as_str().to_owned();
        let path = request.uri().path().to_owned();
        let parent = match self.parent.clone() {
            Some(parent) => Context::new().with_remote_span_context(parent),
            None => Context::new(),
        };
        let recording = self.telemetry.is_recording();
        let span = recording.then(|| {
            let uri = request.uri();
            self.telemetry.tracer().build_with_context(
                opentelemetry::trace::SpanBuilder::from_name(format!("{method} {path}"))
                    .with_kind(SpanKind::Client)
                    .with_attributes([
                        KeyValue::new("http.request.method", method.clone()),
                        KeyValue::new(
                            "url.full",
                            format!(
                                "{}://{}{}",
                                uri.scheme_str().unwrap_or("http"),
                                uri.authority().map_or("", |a| a.as_str()),
                                path
                            ),
                        ),
                        KeyValue::new("server.address", uri.host().unwrap_or("").to_owned()),
                        KeyValue::new(
                            "server.port",
                            i64::from(uri.port_u16().unwrap_or(
                                if uri.scheme_str() == Some("https") {
                                    443
                                } else {
                                    80
                                },
                            )),
                        ),
                    ]),
                &parent,
            )
        });
        // The request carries the context of its own span (or, unrecorded, the caller's).
        let context = match &span {
            Some(span) => Some(span.span_context().clone()),
            None => self.parent.clone(),
        };
        if let Some(context) = context.filter(SpanContext::is_valid) {
            let (traceparent, tracestate) = w3c::format_context(&context);
            let headers = request.headers_mut();
            if let Ok(value) = traceparent.parse() {
                headers.insert("traceparent", value);
            }
            headers.remove("tracestate");
            if !tracestate.is_empty()
                && let Ok(value) = tracestate.parse()
            {
                headers.insert("tracestate", value);
            }
            // With the X-Ray propagator on, the same parent in X-Ray's header too.
            if self.telemetry.xray_propagation()
                && let Some(value) = xray::header(&context).and_then(|h| h.parse().ok())
            {
                headers.insert(xray::HEADER, value);
            }
        }
        // The request's baggage travels with it; what the component wrote there itself
        // is replaced (baggage is set through the tracing interface, within its limits).
        let headers = request.headers_mut();
        headers.remove("baggage");
        if let Some(value) = w3c::format_baggage(&self.baggage).and_then(|b| b.parse().ok()) {
            headers.insert("baggage", value);
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let sent = wasmtime_wasi_http::default_send_request(request, options).await;
            if let Some(mut span) = span {
                match &sent {
                    Ok((response, _)) => {
                        let status = response.status();
                        span.set_attribute(KeyValue::new(
                            "http.response.status_code",
                            i64::from(status.as_u16()),
                        ));
                        if status.is_server_error() || status.is_client_error() {
                            span.set_attribute(KeyValue::new(
                                "error.type",
                                status.as_u16().to_string(),
                            ));
                            span.set_status(Status::error(status.to_string()));
                        }
                    }
                    Err(e) => {
                        span.set_attribute(KeyValue::new("error.type", "request_failed"));
                        span.set_status(Status::error(e.to_string()));
                    }
                }
                span.end();
            }
            let (response, io) = sent?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_default_ports() {
        let e = Endpoint::parse("bolt://DB.example:7688").unwrap();
        assert_eq!(
            (e.scheme.as_str(), e.host.as_str(), e.port),
            ("bolt", "db.example", 7688)
        );
        assert_eq!(Endpoint::parse("http://127.0.0.1").unwrap().port, 80);
        assert_eq!(Endpoint::parse("https://[::1]/v1").unwrap().host, "::1");
        assert!(Endpoint::parse("localhost:6333").is_err());
        assert!(Endpoint::parse("redis://host").is_err());
        assert!(Endpoint::parse("http://user:pw@host:1").is_err());
    }

    #[test]
    fn only_the_endpoint_is_admitted() {
        let e = Endpoint::parse("http://localhost:6333").unwrap();
        let admits = |uri: &str| e.admits(&uri.parse().unwrap());
        assert!(admits("http://localhost:6333/collections"));
        assert!(admits("http://LOCALHOST:6333/"));
        assert!(!admits("http://localhost:6334/"));
        assert!(!admits("http://localhost/"));
        assert!(!admits("http://evil.example:6333/"));
        assert!(!admits("/relative"));
    }
}
