//! Bounds on the MCP sessions of the HTTP transport. rmcp keeps a session (its worker
//! task, channels and our handler) until the client deletes it or it has been idle for
//! the keep-alive, five minutes by default: a client that sends `initialize` and nothing
//! more costs the server about 100 KiB for minutes, so anyone who can reach the port could
//! exhaust its memory (issue 29 measured 1.6 GiB after 15,000 such requests).
//!
//! This layer sits in front of rmcp's service and keeps its own table of the sessions it
//! has seen created: when each was last used, whether its client got past `initialize`
//! (sent a second message, normally `notifications/initialized`), how many of its HTTP
//! exchanges are open (an SSE stream counts until it ends), and which bearer token made
//! it. With that it
//! - caps the open sessions (`max`) and, with tokens configured, each token's
//!   (`per_token`); at a cap, a new session evicts the idle sessions first: those that
//!   never got past `initialize`, then the least recently used, never one with an open
//!   exchange or one used within the last [`EVICTION_GRACE`]; when none can go, the
//!   request is answered `503` with `Retry-After`;
//! - expires sessions that never got past `initialize` after `handshake_timeout`, and idle
//!   ones after `idle_timeout`;
//! - counts sessions opened, closed (by reason) and refused, for `memory_stats` and the
//!   metrics.
//!
//! rmcp's session manager has no hook for any of this (its `SessionManager` trait sees
//! neither the request nor its token), hence a middleware; it closes sessions through
//! the manager it shares with the service.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{SessionId, SessionManager as _};
use tokio_util::sync::CancellationToken;

use super::InFlight;
use crate::memory::SessionStats;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{AttrValue, Attributes, Observation};

/// The header rmcp names a session with.
const SESSION_HEADER: &str = "mcp-session-id";

/// A session used this recently is never evicted to make room: its client is in the middle
/// of something (between `initialize` and `notifications/initialized`, or between calls).
pub const EVICTION_GRACE: Duration = Duration::from_secs(2);

/// How often expired sessions are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The bounds; [`Default`] gives the ones `serve --http` uses unless told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Open sessions at most.
    pub max: usize,
    /// Open sessions one bearer token may hold at most (when tokens are configured).
    pub per_token: usize,
    /// A session whose client never sends a second message is closed after this.
    pub handshake_timeout: Duration,
    /// A session with no request for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for SessionLimits {
    /// 1,024 sessions (about 110 MiB at the measured cost of an idle one), 64 a token,
    /// 10 s to finish the handshake, rmcp's own five minutes of idleness.
    fn default() -> Self {
        Self {
            max: 1024,
            per_token: 64,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Who made a session, for the per-token cap: the bearer token's identity (the session a
/// bound token serves, or the server's own token), inserted by the token check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenIdentity(pub Arc<str>);

#[derive(Debug)]
struct Entry {
    token: Option<TokenIdentity>,
    last_used: Instant,
    /// The client sent a message after `initialize`.
    established: bool,
    /// HTTP exchanges open on it (requests being answered, SSE streams).
    open_exchanges: usize,
}

#[derive(Debug, Default)]
struct Counters {
    opened: AtomicU64,
    refused: AtomicU64,
    evicted: AtomicU64,
    handshake_expired: AtomicU64,
    idle_expired: AtomicU64,
    ended: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
enum Closed {
    Evicted,
    HandshakeExpired,
    IdleExpired,
    Ended,
}

impl Counters {
    fn closed(&self, why: Closed) {
        let counter = match why {
            Closed::Evicted => &self.evicted,
            Closed::HandshakeExpired => &self.handshake_expired,
            Closed::IdleExpired => &self.idle_expired,
            Closed::Ended => &self.ended,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct Table {
    sessions: HashMap<SessionId, Entry>,
    /// New sessions admitted and not yet answered: they count against the caps.
    reserved: usize,
    reserved_by_token: HashMap<TokenIdentity, usize>,
}

impl Table {
    fn held_by(&self, token: &TokenIdentity) -> usize {
        self.sessions
            .values()
            .filter(|e| e.token.as_ref() == Some(token))
            .count()
            + self.reserved_by_token.get(token).copied().unwrap_or(0)
    }

    /// The session to close to make room among those `eligible`, or when the soonest
    /// of them may go.
    fn victim(
        &self,
        now: Instant,
        eligible: impl Fn(&Entry) -> bool,
    ) -> Result<SessionId, Duration> {
        let mut soonest = EVICTION_GRACE;
        let mut best: Option<(&SessionId, &Entry)> = None;
        for (id, entry) in &self.sessions {
            if entry.open_exchanges > 0 || !eligible(entry) {
                continue;
            }
            let idle = now.saturating_duration_since(entry.last_used);
            if idle < EVICTION_GRACE {
                soonest = soonest.min(EVICTION_GRACE - idle);
                continue;
            }
            // Never-established first, then the least recently used.
            let better = best.is_none_or(|(_, b)| {
                (entry.established, entry.last_used) < (b.established, b.last_used)
            });
            if better {
                best = Some((id, entry));
            }
        }
        best.map(|(id, _)| id.clone()).ok_or(soonest)
    }
}

/// The session table, shared by the middleware, the sweeper and `memory_stats`.
pub struct Sessions {
    limits: SessionLimits,
    in_flight: InFlight,
    manager: Arc<LocalSessionManager>,
    table: Mutex<Table>,
    counters: Counters,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// A table bounding the sessions of `manager`, counting the POSTs being answered in
    /// `in_flight`; its sweeper runs until `shutdown`.
    pub fn new(
        limits: SessionLimits,
        manager: Arc<LocalSessionManager>,
        in_flight: InFlight,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let sessions = Arc::new(Self {
            limits,
            in_flight,
            manager,
            table: Mutex::new(Table::default()),
            counters: Counters::default(),
        });
        tokio::spawn(sweep(Arc::downgrade(&sessions), shutdown));
        sessions
    }

    /// The bounds in force.
    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counts now.
    pub fn stats(&self) -> SessionStats {
        let open = self.table().sessions.len() as u64;
        let c = &self.counters;
        SessionStats {
            open,
            max: self.limits.max as u64,
            opened: c.opened.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
            handshake_expired: c.handshake_expired.load(Ordering::Relaxed),
            idle_expired: c.idle_expired.load(Ordering::Relaxed),
            ended: c.ended.load(Ordering::Relaxed),
        }
    }

    /// Reports the counts as metrics at each collection.
    pub fn observe(self: &Arc<Self>, metrics: &Metrics) {
        let weak = Arc::downgrade(self);
        metrics.observe(Box::new(move |out: &mut Vec<Observation>| {
            let Some(sessions) = weak.upgrade() else {
                return;
            };
            let s = sessions.stats();
            out.push(Observation {
                name: "ww.mcp.sessions.opened",
                unit: "{session}",
                description: "MCP sessions opened over HTTP",
                attributes: Attributes::new(vec![]),
                value: s.opened,
            });
            out.push(Observation {
                name: "ww.mcp.sessions.refused",
                unit: "{session}",
                description: "New MCP sessions refused (503) at the session cap",
                attributes: Attributes::new(vec![]),
                value: s.refused,
            });
            for (reason, value) in [
                ("evicted", s.evicted),
                ("handshake_expired", s.handshake_expired),
                ("idle_expired", s.idle_expired),
                ("ended", s.ended),
            ] {
                out.push(Observation {
                    name: "ww.mcp.sessions.closed",
                    unit: "{session}",
                    description: "MCP sessions closed, by reason",
                    attributes: Attributes::new(vec![(
                        "ww.mcp.session.close_reason".into(),
                        AttrValue::from(reason.to_owned()),
                    )]),
                    value,
                });
            }
        }));
    }

    /// Admits a new session for `token`, choosing sessions to evict to make room, or
    /// says how long to wait.
    fn admit(&self, token: Option<&TokenIdentity>) -> Result<Vec<SessionId>, Duration> {
        let now = Instant::now();
        let mut table = self.table();
        let mut evict = Vec::new();
        let mut refused = None;
        if let Some(token) = token {
            while table.held_by(token) >= self.limits.per_token {
                match table.victim(now, |e| e.token.as_ref() == Some(token)) {
                    Ok(id) => {
                        table.sessions.remove(&id);
                        evict.push(id);
                    }
                    Err(wait) => {
                        refused = Some(wait);
                        break;
                    }
                }
            }
        }
        while refused.is_none() && table.sessions.len() + table.reserved >= self.limits.max {
            match table.victim(now, |_| true) {
                Ok(id) => {
                    table.sessions.remove(&id);
                    evict.push(id);
                }
                Err(wait) => refused = Some(wait),
            }
        }
        if let Some(wait) = refused {
            // What was chosen is closed all the same (it is out of the table): it frees
            // room soon; this session is refused.
            drop(table);
            self.close(evict, Closed::Evicted);
            return Err(wait);
        }
        table.reserved += 1;
        if let Some(token) = token {
            *table.reserved_by_token.entry(token.clone()).or_default() += 1;
        }
        Ok(evict)
    }

    /// The admitted session's answer is in: `id` is the session rmcp made, if it made one.
    fn admitted(&self, token: Option<TokenIdentity>, id: Option<SessionId>) {
        let mut table = self.table();
        table.reserved = table.reserved.saturating_sub(1);
        if let Some(token) = &token
            && let Some(count) = table.reserved_by_token.get_mut(token)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                table.reserved_by_token.remove(token);
            }
        }
        if let Some(id) = id {
            table.sessions.insert(
                id,
                Entry {
                    token,
                    last_used: Instant::now(),
                    established: false,
                    open_exchanges: 0,
                },
            );
            self.counters.opened.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request on session `id` begins; `None` when the table does not know it (rmcp
    /// will answer it: 404 for a session it closed).
    fn begin(self: &Arc<Self>, id: &SessionId) -> Option<Exchange> {
        let mut table = self.table();
        let entry = table.sessions.get_mut(id)?;
        entry.last_used = Instant::now();
        entry.established = true;
        entry.open_exchanges += 1;
        Some(Exchange {
            sessions: self.clone(),
            id: id.clone(),
        })
    }

    fn end_exchange(&self, id: &SessionId) {
        if let Some(entry) = self.table().sessions.get_mut(id) {
            entry.open_exchanges = entry.open_exchanges.saturating_sub(1);
            entry.last_used = Instant::now();
        }
    }

    fn ended(&self, id: &SessionId) {
        if self.table().sessions.remove(id).is_some() {
            self.counters.closed(Closed::Ended);
        }
    }

    /// Closes `ids` in rmcp (in the background: closing waits for the worker to stop).
    fn close(&self, ids: Vec<SessionId>, why: Closed) {
        if ids.is_empty() {
            return;
        }
        for _ in &ids {
            self.counters.closed(why);
        }
        let manager = self.manager.clone();
        tokio::spawn(async move {
            for id in ids {
                if let Err(e) = manager.close_session(&id).await {
                    tracing::debug!("closing MCP session {id}: {e}");
                }
            }
        });
    }

    /// Closes the sessions past their timeouts, and forgets those rmcp closed itself.
    async fn sweep_once(&self) {
        let listed = Instant::now();
        let live: std::collections::HashSet<SessionId> =
            self.manager.sessions.read().await.keys().cloned().collect();
        let now = Instant::now();
        let (mut handshake, mut idle, mut gone) = (Vec::new(), Vec::new(), 0);
        {
            let mut table = self.table();
            table.sessions.retain(|id, entry| {
                // Gone from rmcp's list; unless it was added (or used) after the list
                // was read, and may simply not be on it yet.
                if !live.contains(id) && entry.last_used < listed {
                    gone += 1;
                    return false;
                }
                if entry.open_exchanges > 0 {
                    return true;
                }
                let quiet = now.saturating_duration_since(entry.last_used);
                if !entry.established && quiet >= self.limits.handshake_timeout {
                    handshake.push(id.clone());
                    false
                } else if quiet >= self.limits.idle_timeout {
                    idle.push(id.clone());
                    false
                } else {
                    true
                }
            });
        }
        for _ in 0..gone {
            self.counters.closed(Closed::Ended);
        }
        self.close(handshake, Closed::HandshakeExpired);
        self.close(idle, Closed::IdleExpired);
    }
}

async fn sweep(sessions: std::sync::Weak<Sessions>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let Some(sessions) = sessions.upgrade() else {
            return;
        };
        sessions.sweep_once().await;
    }
}

/// An open HTTP exchange on a session; dropped when its answer (or SSE stream) ends.
struct Exchange {
    sessions: Arc<Sessions>,
    id: SessionId,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.sessions.end_exchange(&self.id);
    }
}

/// The middleware: admits new sessions within the caps, keeps the table current, and
/// counts every POST in flight until its answer has been sent.
pub async fn bound(
    State(sessions): State<Arc<Sessions>>,
    request: Request,
    next: Next,
) -> Response {
    let running = (request.method() == Method::POST).then(|| sessions.in_flight.begin());
    let response = exchange(&sessions, request, next).await;
    held_while_sent(response, running)
}

/// `response`, with `guard` dropped only when its body has been sent (or dropped): an
/// SSE answer streams long after the handler returned.
fn held_while_sent<G: Send + Sync + 'static>(response: Response, guard: Option<G>) -> Response {
    match guard {
        Some(guard) => response.map(|body| {
            axum::body::Body::new(body.map_frame(move |frame| {
                let _held = &guard;
                frame
            }))
        }),
        None => response,
    }
}

async fn exchange(sessions: &Arc<Sessions>, request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(SessionId::from);
    let Some(id) = id else {
        if request.method() != Method::POST {
            return next.run(request).await;
        }
        return open(sessions, request, next).await;
    };
    if request.method() == Method::DELETE {
        let response = next.run(request).await;
        sessions.ended(&id);
        return response;
    }
    // The exchange stays open while the answer streams.
    let exchange = sessions.begin(&id);
    let response = next.run(request).await;
    held_while_sent(response, exchange)
}

/// A POST without a session: an `initialize` that may open one.
async fn open(sessions: &Arc<Sessions>, request: Request, next: Next) -> Response {
    let token = request.extensions().get::<TokenIdentity>().cloned();
    let evicted = match sessions.admit(token.as_ref()) {
        Ok(evicted) => evicted,
        Err(wait) => {
            sessions.counters.refused.fetch_add(1, Ordering::Relaxed);
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, HeaderValue::from(seconds))],
                "too many open MCP sessions: retry later, or end unused sessions (DELETE)",
            )
                .into_response();
        }
    };
    sessions.close(evicted, Closed::Evicted);
    let response = next.run(request).await;
    let made = response
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(SessionId::from);
    sessions.admitted(token, made);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(established: bool, idle: Duration, now: Instant) -> Entry {
        Entry {
            token: None,
            last_used: now - idle,
            established,
            open_exchanges: 0,
        }
    }

    #[test]
    fn the_victim_is_a_never_established_session_before_the_least_recently_used() {
        let now = Instant::now() + Duration::from_secs(60);
        let mut table = Table::default();
        table
            .sessions
            .insert("old".into(), entry(true, Duration::from_secs(50), now));
        table
            .sessions
            .insert("pending".into(), entry(false, Duration::from_secs(3), now));
        table
            .sessions
            .insert("fresh".into(), entry(false, Duration::from_millis(10), now));
        assert_eq!(table.victim(now, |_| true).unwrap().as_ref(), "pending");
        table.sessions.remove("pending");
        assert_eq!(table.victim(now, |_| true).unwrap().as_ref(), "old");
        table.sessions.get_mut("old").unwrap().open_exchanges = 1;
        let wait = table.victim(now, |_| true).unwrap_err();
        assert!(
            wait <= EVICTION_GRACE - Duration::from_millis(10),
            "{wait:?}"
        );
    }
}
