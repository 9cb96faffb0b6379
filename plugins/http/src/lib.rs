//! A small blocking HTTP client over `wasi:http` (the `wasip2` crate's bindings) for guest
//! components: one request, its status and body.
//!
//! Written here rather than taken from `waki` because of one race in how such a client
//! must end a request body: with `content-length` set, the host may close the body stream
//! as soon as the last byte is written, so a `flush` or `check-write` after it can see
//! `closed` although the request went out whole. `waki` 0.5 reports that as an error
//! (intermittently: 2 of 4 `create_episode` calls in one run against a local server);
//! here a stream closed after the whole body was written is the normal end, and the
//! response (or its error) is what decides.

use std::time::Duration;

use wasip2::http::outgoing_handler;
use wasip2::http::types::ErrorCode;
use wasip2::http::types::{
    Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::streams::StreamError;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not `scheme://host[/path]`.
    #[error("{0:?} is not an absolute URL with a host")]
    Url(String),
    /// A header name or value wasi:http does not take.
    #[error("bad header: {0}")]
    Header(String),
    /// The host refused a part of the request (its method, scheme, authority, ...).
    #[error("the host refused the request's {0}")]
    Refused(&'static str),
    /// The request failed on its way, or the server's answer was not HTTP (wasi:http's
    /// error code: connection refused, timeout, ...).
    #[error(transparent)]
    Transport(#[from] ErrorCode),
    /// A body stream failed part-way.
    #[error("the {0} stream failed: {1}")]
    Stream(&'static str, String),
    /// The response body is over [`MAX_RESPONSE`] bytes.
    #[error("a response body over {MAX_RESPONSE} bytes")]
    TooLarge,
    /// The response could not be read (taken twice, no body).
    #[error("the response has {0}")]
    Response(&'static str),
}

/// A response body larger than this is refused.
pub const MAX_RESPONSE: usize = 64 << 20;
/// Bytes per `blocking-write-and-flush` (the most WASI accepts in one call).
const WRITE_CHUNK: usize = 4096;
/// Bytes asked for per read of a response body: large enough that a search answer
/// takes a few calls, small enough not to over-allocate for an empty one.
const READ_CHUNK: u64 = 64 << 10;

/// A received response.
#[derive(Debug)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The whole body.
    pub body: Vec<u8>,
}

/// A request.
#[derive(Debug, Default)]
pub struct Request<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// `http://host:port/path?query`.
    pub url: &'a str,
    /// Header names and values.
    pub headers: Vec<(&'a str, String)>,
    /// The body, if any (sent with its `content-length`).
    pub body: Option<Vec<u8>>,
    /// Bound on connecting (the host's default when `None`).
    pub connect_timeout: Option<Duration>,
}

fn method(name: &str) -> Method {
    match name {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "HEAD" => Method::Head,
        other => Method::Other(other.to_owned()),
    }
}

/// Scheme, authority and path-with-query of `url`.
fn split(url: &str) -> Result<(Scheme, &str, &str), HttpError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| HttpError::Url(url.to_owned()))?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_owned()),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(HttpError::Url(url.to_owned()));
    }
    Ok((scheme, authority, if path.is_empty() { "/" } else { path }))
}

/// Send `request` and wait for the whole response.
pub fn send(request: Request<'_>) -> Result<Response, HttpError> {
    // The host opens the request's CLIENT span under the caller's current span, which
    // must not be a start the SDK is still holding back.
    ww_guest::flush_span_starts();
    let (scheme, authority, path) = split(request.url)?;
    let mut headers: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect();
    if let Some(body) = &request.body {
        headers.push((
            "content-length".to_owned(),
            body.len().to_string().into_bytes(),
        ));
    }
    let fields = Fields::from_list(&headers).map_err(|e| HttpError::Header(format!("{e:?}")))?;
    let outgoing = OutgoingRequest::new(fields);
    let refused = HttpError::Refused;
    outgoing
        .set_method(&method(request.method))
        .map_err(|()| refused("method"))?;
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| refused("scheme"))?;
    outgoing
        .set_authority(Some(authority))
        .map_err(|()| refused("authority"))?;
    outgoing
        .set_path_with_query(Some(path))
        .map_err(|()| refused("path"))?;
    let body = outgoing.body().map_err(|()| refused("body"))?;
    let options = RequestOptions::new();
    if let Some(timeout) = request.connect_timeout {
        options
            .set_connect_timeout(Some(timeout.as_nanos() as u64))
            .map_err(|()| refused("connect timeout"))?;
    }
    let future = outgoing_handler::handle(outgoing, Some(options))?;

    let bytes = request.body.unwrap_or_default();
    let stream = body.write().map_err(|()| refused("body stream"))?;
    let mut written = 0;
    for chunk in bytes.chunks(WRITE_CHUNK) {
        match stream.blocking_write_and_flush(chunk) {
            Ok(()) => written += chunk.len(),
            // The host closed the stream: after the last byte that is the normal end;
            // before it, the response below carries what went wrong.
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(HttpError::Stream("request body", e.to_debug_string()));
            }
        }
    }
    drop(stream);
    let finished = OutgoingBody::finish(body, None);
    if written == bytes.len() {
        finished?;
    }

    let response = loop {
        match future.get() {
            Some(result) => break result,
            None => future.subscribe().block(),
        }
    };
    let response = response.map_err(|()| HttpError::Response("been taken twice"))??;
    let status = response.status();
    let incoming = response
        .consume()
        .map_err(|()| HttpError::Response("no body"))?;
    let stream = incoming
        .stream()
        .map_err(|()| HttpError::Response("no body stream"))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(READ_CHUNK) {
            Ok(chunk) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_RESPONSE {
                    return Err(HttpError::TooLarge);
                }
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(HttpError::Stream("response body", e.to_debug_string()));
            }
        }
    }
    drop(stream);
    let _trailers = IncomingBody::finish(incoming);
    Ok(Response { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_their_parts() {
        let (_, authority, path) = split("http://127.0.0.1:6333/collections/x?wait=true").unwrap();
        assert_eq!(
            (authority, path),
            ("127.0.0.1:6333", "/collections/x?wait=true")
        );
        assert_eq!(split("http://host").unwrap().2, "/");
        assert_eq!(split("http://host?q=1").unwrap().2, "?q=1");
        assert!(split("host:80/x").is_err());
        assert!(split("http:///x").is_err());
    }
}
