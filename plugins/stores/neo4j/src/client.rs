//! The adapter's one connection: opened on first use (with the schema), reused, replaced
//! when it breaks, every statement a traced CLIENT span.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use ww_guest::settings;
use ww_guest::{SpanBuilder, SpanKind, get_trace_context};

pub use ww_bolt::Rows;
use ww_bolt::{BoltError, Connection, Options, Value, map};
use ww_guest::graph_store::Error;

/// Attempts to open a connection: some servers (FalkorDB) can leave a connection made
/// right after a closed one hanging at the handshake; the next attempt succeeds.
const CONNECT_ATTEMPTS: usize = 2;
/// After a failed connection, calls fail at once for this long instead of each waiting
/// for its own timeout (one tool call makes several store calls).
const COOL_DOWN: Duration = Duration::from_secs(1);
/// Connecting, unless `connect_timeout_ms` says otherwise: a server on the network
/// accepts in milliseconds; two seconds leaves room for a TLS-less handshake over a WAN.
const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2000;
/// One query's reads and writes, unless `query_timeout_ms` says otherwise: our queries
/// touch a node's neighbourhood; five seconds is a stuck server, not a slow query.
const DEFAULT_QUERY_TIMEOUT_MS: u64 = 5000;
/// Bolt's registered port, when the endpoint names none.
const DEFAULT_PORT: u16 = 7687;

/// One Cypher statement and its parameters.
pub struct Statement<'q> {
    query: &'q str,
    params: Value,
    /// The leading clause, for `db.operation.name`.
    operation: &'static str,
    /// A refusal is an answer, not a failure (feature probes).
    probe: bool,
}

impl<'q> Statement<'q> {
    fn new(query: &'q str, params: Value) -> Self {
        let operation = ["MERGE", "MATCH", "CREATE", "RETURN"]
            .into_iter()
            .find(|op| query.starts_with(op))
            .unwrap_or("QUERY");
        Self {
            query,
            params,
            operation,
            probe: false,
        }
    }

    /// A statement that only reads.
    pub fn read(query: &'q str, params: Value) -> Self {
        Self::new(query, params)
    }

    /// A statement that writes (idempotent, as every one here is: retried once when the
    /// connection breaks under it).
    pub fn write(query: &'q str, params: Value) -> Self {
        Self::new(query, params)
    }
}

/// Settings and the live connection.
pub struct Client {
    options: Options,
    database: String,
    connection: Option<Connection>,
    schema_ready: bool,
    /// The last failure to connect, and when.
    unreachable: Option<(Instant, String)>,
}

thread_local! {
    static CLIENT: RefCell<Option<Client>> = const { RefCell::new(None) };
}

/// Run `f` with the client (made from the settings on first use).
pub fn with<T>(f: impl FnOnce(&mut Client) -> Result<T, Error>) -> Result<T, Error> {
    CLIENT.with(|slot| {
        let mut slot = slot.borrow_mut();
        let client = match slot.take() {
            Some(client) => client,
            None => Client::from_settings()?,
        };
        f(slot.insert(client))
    })
}

fn storage(message: impl std::fmt::Display) -> Error {
    Error::Storage(message.to_string())
}

fn millis(name: &str, default: u64) -> Result<Duration, Error> {
    Ok(Duration::from_millis(
        settings::parsed::<u64>(name)
            .map_err(storage)?
            .unwrap_or(default),
    ))
}

impl Client {
    fn from_settings() -> Result<Self, Error> {
        let endpoint = settings::endpoint()
            .ok_or_else(|| storage("no endpoint configured (endpoint = \"bolt://host:7687\")"))?;
        let rest = endpoint
            .strip_prefix("bolt://")
            .or_else(|| endpoint.strip_prefix("neo4j://"))
            .ok_or_else(|| storage(format!("endpoint {endpoint} is not bolt://host:port")))?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse()
                    .map_err(|_| storage(format!("endpoint {endpoint}: bad port")))?,
            ),
            None => (rest, DEFAULT_PORT),
        };
        let basic_auth = match (settings::setting("user"), settings::setting("password")) {
            (Some(user), Some(password)) => Some((user, password)),
            _ => None,
        };
        Ok(Self {
            options: Options {
                host: host.trim_matches(['[', ']']).to_owned(),
                port,
                basic_auth,
                connect_timeout: millis("connect_timeout_ms", DEFAULT_CONNECT_TIMEOUT_MS)?,
                io_timeout: millis("query_timeout_ms", DEFAULT_QUERY_TIMEOUT_MS)?,
                user_agent: concat!("world-weaver-neo4j/", env!("CARGO_PKG_VERSION")).to_owned(),
            },
            database: settings::setting("database").unwrap_or_else(|| "neo4j".to_owned()),
            connection: None,
            schema_ready: false,
            unreachable: None,
        })
    }

    /// `bolt://host:port (server agent, Bolt x.y), database d`.
    pub fn describe(&self) -> String {
        let server = match &self.connection {
            Some(c) => format!(" ({}, Bolt {}.{})", c.server, c.version.0, c.version.1),
            None => String::new(),
        };
        format!(
            "bolt://{}:{}{server}, database {}",
            self.options.host, self.options.port, self.database
        )
    }

    fn connect(&mut self) -> Result<&mut Connection, Error> {
        if self.connection.is_none() {
            if let Some((at, reason)) = &self.unreachable
                && at.elapsed() < COOL_DOWN
            {
                return Err(storage(reason));
            }
            let mut last = None;
            for _ in 0..CONNECT_ATTEMPTS {
                let opened = Connection::open(&self.options);
                // Connections opened, by outcome: churn here is a server restarting or a
                // network dropping idle connections.
                let outcome = if opened.is_ok() { "opened" } else { "failed" };
                ww_guest::metrics::counter_add(
                    "ww.neo4j.connections",
                    "{connection}",
                    1.0,
                    &[
                        ww_guest::kv("ww.outcome", outcome),
                        ww_guest::kv("server.address", self.options.host.clone()),
                    ],
                );
                match opened {
                    Ok(connection) => {
                        self.connection = Some(connection);
                        break;
                    }
                    // A refused connection will be refused again: only a hang is retried.
                    Err(e @ BoltError::Timeout(_)) => last = Some(e),
                    Err(e) => {
                        last = Some(e);
                        break;
                    }
                }
            }
            if let Some(error) = last.filter(|_| self.connection.is_none()) {
                let reason = format!(
                    "cannot reach the graph database at bolt://{}:{}: {error}",
                    self.options.host, self.options.port
                );
                self.unreachable = Some((Instant::now(), reason.clone()));
                return Err(storage(reason));
            }
            self.unreachable = None;
        }
        self.connection
            .as_mut()
            .ok_or_else(|| storage("no connection to the graph database"))
    }

    /// Indexes (and, where supported, a uniqueness constraint) on the node id, once per
    /// connection's server. Neo4j 5 takes `CREATE CONSTRAINT ... IF NOT EXISTS`; servers
    /// without constraints in Cypher (FalkorDB) get a plain index instead.
    fn ensure_schema(&mut self) -> Result<(), Error> {
        if self.schema_ready {
            return Ok(());
        }
        let constraint = Statement {
            probe: true,
            ..Statement::new(
                "CREATE CONSTRAINT ww_node_id IF NOT EXISTS FOR (n:WwNode) REQUIRE n.id IS UNIQUE",
                Value::Map(Vec::new()),
            )
        };
        if let Err(error) = self.execute(&constraint) {
            if !matches!(error, BoltError::Server { .. }) {
                return Err(self.fail(error));
            }
            let index = Statement {
                probe: true,
                ..Statement::new(
                    "CREATE INDEX FOR (n:WwNode) ON (n.id)",
                    Value::Map(Vec::new()),
                )
            };
            match self.execute(&index) {
                Ok(_) => {}
                // Already there (FalkorDB says so as an error).
                Err(BoltError::Server { message, .. }) if message.contains("already") => {}
                Err(error) => return Err(self.fail(error)),
            }
        }
        self.schema_ready = true;
        Ok(())
    }

    /// Run a statement: a `neo4j.query` span, the trace context in the transaction
    /// metadata, one retry on a fresh connection if the connection broke.
    pub fn run(&mut self, statement: Statement<'_>) -> Result<Rows, Error> {
        self.ensure_schema()?;
        let reused = self.connection.is_some();
        match self.execute(&statement) {
            // A connection that had served before broke: the server may have restarted.
            Err(BoltError::Connection(_) | BoltError::Timeout(_)) if reused => {
                // A new connection, and the schema again (the server may be new).
                self.connection = None;
                self.schema_ready = false;
                self.ensure_schema()?;
                self.execute(&statement).map_err(|e| self.fail(e))
            }
            other => other.map_err(|e| self.fail(e)),
        }
    }

    /// A failed statement as the interface's error; a broken connection is dropped.
    fn fail(&mut self, error: BoltError) -> Error {
        if !matches!(error, BoltError::Server { .. }) {
            self.connection = None;
        }
        storage(format!("graph database: {error}"))
    }

    fn execute(&mut self, statement: &Statement<'_>) -> Result<Rows, BoltError> {
        let span = SpanBuilder::new("neo4j.query")
            .kind(SpanKind::Client)
            .attr("db.system.name", "neo4j")
            .attr("db.namespace", self.database.clone())
            .attr("db.operation.name", statement.operation)
            .attr("db.query.text", statement.query.to_owned())
            .attr("server.address", self.options.host.clone())
            .attr("server.port", i64::from(self.options.port))
            .start();
        let context = get_trace_context();
        let mut metadata = vec![("traceparent".to_owned(), Value::from(context.traceparent))];
        if !context.tracestate.is_empty() {
            metadata.push(("tracestate".to_owned(), Value::from(context.tracestate)));
        }
        // The request's baggage as a map, next to the trace context.
        let baggage = ww_guest::baggage::all();
        if !baggage.is_empty() {
            let entries = baggage.into_iter().map(|(k, v)| (k, Value::from(v)));
            metadata.push(("baggage".to_owned(), Value::Map(entries.collect())));
        }
        let extra = map([
            ("db", Value::from(self.database.as_str())),
            ("tx_metadata", Value::Map(metadata)),
        ]);
        let result = match self.connect() {
            Ok(connection) => connection.run(statement.query, statement.params.clone(), extra),
            Err(Error::Storage(m)) => Err(BoltError::Connection(m)),
            Err(other) => Err(BoltError::Connection(format!("{other:?}"))),
        };
        match &result {
            Ok(rows) => span.set_attribute("db.response.returned_rows", rows.rows.len() as i64),
            Err(BoltError::Server { code, message }) => {
                span.set_attribute("db.response.status_code", code.clone());
                if statement.probe {
                    span.add_event("refused", vec![ww_guest::kv("message", message.clone())]);
                } else {
                    span.record_error("neo4j.server_error", message.clone());
                }
            }
            Err(error) => span.record_error("neo4j.connection_error", error.to_string()),
        }
        result
    }
}
