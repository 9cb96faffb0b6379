//! A Bolt client (protocol 5.x, falling back to 4.4) over one TCP connection: handshake,
//! HELLO/LOGON, auto-commit RUN + PULL pipelined in one round trip, RESET after a failure.
//! Written from the protocol description at <https://neo4j.com/docs/bolt/current/>.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::packstream::{Decoder, Value, encode, map};

const MAGIC: [u8; 4] = [0x60, 0x60, 0xB0, 0x17];
/// Proposed versions, best first: 5.4 down to 5.0 (a range of 4 minors), then 4.4.
const PROPOSALS: [[u8; 4]; 4] = [[0, 4, 4, 5], [0, 0, 4, 4], [0; 4], [0; 4]];
/// A message larger than this from the server is refused (a hostile or broken peer).
const MAX_MESSAGE: usize = 64 << 20;

const HELLO: u8 = 0x01;
const GOODBYE: u8 = 0x02;
const RESET: u8 = 0x0F;
const RUN: u8 = 0x10;
const PULL: u8 = 0x3F;
const LOGON: u8 = 0x6A;
const SUCCESS: u8 = 0x70;
const RECORD: u8 = 0x71;
const IGNORED: u8 = 0x7E;
const FAILURE: u8 = 0x7F;

/// What went wrong.
#[derive(Debug, Clone, PartialEq)]
pub enum BoltError {
    /// The connection failed: it is gone; a new one may succeed.
    Connection(String),
    /// The server did not answer in time: the connection is gone.
    Timeout(String),
    /// The server refused the query (`FAILURE`); the connection is still usable.
    Server {
        /// The server's status code (`Neo.ClientError....`).
        code: String,
        /// Its message.
        message: String,
    },
    /// The peer does not speak Bolt as expected.
    Protocol(String),
}

impl std::fmt::Display for BoltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BoltError::Connection(m) => write!(f, "connection: {m}"),
            BoltError::Timeout(m) => write!(f, "no answer in time: {m}"),
            BoltError::Server { code, message } => write!(f, "{code}: {message}"),
            BoltError::Protocol(m) => write!(f, "protocol: {m}"),
        }
    }
}

fn io(context: &str) -> impl Fn(std::io::Error) -> BoltError + '_ {
    use std::io::ErrorKind;
    move |e| match e.kind() {
        // A read timeout surfaces as EAGAIN on WASI.
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            BoltError::Timeout(format!("{context}: {e}"))
        }
        _ => BoltError::Connection(format!("{context}: {e}")),
    }
}

/// How to reach and log in to the server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Host name or address.
    pub host: String,
    /// Port (7687 by default in the configuration).
    pub port: u16,
    /// `None`: the `none` scheme.
    pub basic_auth: Option<(String, String)>,
    /// Bound on connecting and on the handshake.
    pub connect_timeout: Duration,
    /// Each read and write of a query (a hung server fails within it).
    pub io_timeout: Duration,
    /// What the client calls itself in `HELLO`.
    pub user_agent: String,
}

/// A query's result: column names and rows.
#[derive(Debug, Default)]
pub struct Rows {
    /// Column names.
    pub fields: Vec<String>,
    /// Each row's values, in the columns' order.
    pub rows: Vec<Vec<Value>>,
}

/// How the server treats string parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strings {
    /// As values, the way Bolt defines them (Neo4j, Memgraph).
    Verbatim,
    /// Substituted into the query text inside single quotes, backslash escapes parsed
    /// (FalkorDB 4.16's Bolt layer): sent escaped, so a quote in a value stays data.
    Escaped,
}

/// Escape `\` and `'` in every string of `value` (maps' values, lists' items).
fn escape_strings(value: Value) -> Value {
    match value {
        Value::String(s) if s.contains(['\\', '\'']) => {
            Value::String(s.replace('\\', "\\\\").replace('\'', "\\'"))
        }
        Value::List(items) => Value::List(items.into_iter().map(escape_strings).collect()),
        Value::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (k, escape_strings(v)))
                .collect(),
        ),
        other => other,
    }
}

/// A string with the characters a textual substitution would misread.
const PROBE: &str = "a'b\\c\\'d";

/// One logged-in connection.
pub struct Connection {
    stream: TcpStream,
    /// How string parameters must be sent (probed after logging in).
    pub strings: Strings,
    /// The negotiated version, (major, minor).
    pub version: (u8, u8),
    /// The server's `server` agent string (`Neo4j/5.13.0`).
    pub server: String,
}

impl Connection {
    /// Connect, negotiate and log in, each step within the timeouts.
    pub fn open(options: &Options) -> Result<Self, BoltError> {
        let addrs: Vec<SocketAddr> = (options.host.as_str(), options.port)
            .to_socket_addrs()
            .map_err(io("resolving the host"))?
            .collect();
        let mut last = BoltError::Connection("the host has no address".into());
        for addr in addrs {
            match Self::open_at(addr, options) {
                Ok(connection) => return Ok(connection),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn open_at(addr: SocketAddr, options: &Options) -> Result<Self, BoltError> {
        let stream =
            TcpStream::connect_timeout(&addr, options.connect_timeout).map_err(io("connecting"))?;
        // The handshake is bounded by the connect timeout: some servers accept a
        // connection and then never answer it.
        stream
            .set_read_timeout(Some(options.connect_timeout))
            .map_err(io("setting a timeout"))?;
        stream
            .set_write_timeout(Some(options.io_timeout))
            .map_err(io("setting a timeout"))?;
        // The handshake is bounded by the connect timeout: some servers accept a
        // connection and then never answer it.
        stream.set_nodelay(true).ok();
        let mut connection = Connection {
            stream,
            strings: Strings::Verbatim,
            version: (0, 0),
            server: String::new(),
        };
        let mut handshake = MAGIC.to_vec();
        PROPOSALS
            .iter()
            .for_each(|p| handshake.extend_from_slice(p));
        connection
            .stream
            .write_all(&handshake)
            .map_err(io("handshake"))?;
        let mut chosen = [0u8; 4];
        connection
            .stream
            .read_exact(&mut chosen)
            .map_err(io("handshake"))?;
        connection.version = (chosen[3], chosen[2]);
        if !matches!(connection.version, (5, _) | (4, 4)) {
            return Err(BoltError::Protocol(format!(
                "the server offered no Bolt version we speak (answer {chosen:02x?})"
            )));
        }
        connection.log_in(options)?;
        connection.strings = connection.probe_strings()?;
        connection
            .stream
            .set_read_timeout(Some(options.io_timeout))
            .map_err(io("setting a timeout"))?;
        Ok(connection)
    }

    fn log_in(&mut self, options: &Options) -> Result<(), BoltError> {
        let auth = match &options.basic_auth {
            Some((user, password)) => vec![
                ("scheme".to_owned(), Value::from("basic")),
                ("principal".to_owned(), Value::from(user.as_str())),
                ("credentials".to_owned(), Value::from(password.as_str())),
            ],
            None => vec![("scheme".to_owned(), Value::from("none"))],
        };
        let mut hello = vec![
            (
                "user_agent".to_owned(),
                Value::from(options.user_agent.as_str()),
            ),
            (
                "bolt_agent".to_owned(),
                map([("product", Value::from(options.user_agent.as_str()))]),
            ),
        ];
        // 5.1 and later log in with LOGON; before, the credentials go in HELLO.
        let logon = self.version >= (5, 1);
        if !logon {
            hello.extend(auth.clone());
        }
        self.send(HELLO, vec![Value::Map(hello)])?;
        let meta = self.summary()?;
        self.server = meta
            .get("server")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        if logon {
            self.send(LOGON, vec![Value::Map(auth)])?;
            self.summary()?;
        }
        Ok(())
    }

    /// Whether string parameters arrive intact as sent, or only escaped; a server that
    /// mangles them either way is refused (its data could not be trusted).
    fn probe_strings(&mut self) -> Result<Strings, BoltError> {
        let probe = |c: &mut Self, sent: &str| -> Result<bool, BoltError> {
            let params = map([("p", Value::from(sent))]);
            match c.run_raw("RETURN $p", params, Value::Map(Vec::new())) {
                Ok(rows) => {
                    Ok(rows.rows.first().and_then(|r| r.first()) == Some(&Value::from(PROBE)))
                }
                Err(BoltError::Server { .. }) => Ok(false),
                Err(other) => Err(other),
            }
        };
        if probe(self, PROBE)? {
            return Ok(Strings::Verbatim);
        }
        let escaped = escape_strings(Value::from(PROBE));
        if probe(self, escaped.as_str().unwrap_or_default())? {
            return Ok(Strings::Escaped);
        }
        Err(BoltError::Protocol(
            "the server alters string parameters (a quote or backslash does not come back \
             as sent, escaped or not): refusing to store data through it"
                .into(),
        ))
    }

    /// Write one message, chunked.
    fn send(&mut self, tag: u8, fields: Vec<Value>) -> Result<(), BoltError> {
        self.send_all(&[(tag, fields)])
    }

    /// Write messages in one write: a RUN and its PULL leave in one segment. (WASI
    /// sockets have no TCP_NODELAY, and two small writes would meet Nagle's algorithm
    /// and the server's delayed ACK: 40 ms per statement.)
    fn send_all(&mut self, messages: &[(u8, Vec<Value>)]) -> Result<(), BoltError> {
        let mut framed = Vec::new();
        let mut body = Vec::new();
        for (tag, fields) in messages {
            body.clear();
            encode(&Value::Struct(*tag, fields.clone()), &mut body);
            for chunk in body.chunks(u16::MAX as usize) {
                framed.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
                framed.extend_from_slice(chunk);
            }
            framed.extend_from_slice(&[0, 0]);
        }
        self.stream.write_all(&framed).map_err(io("sending"))
    }

    /// Read one message: its tag and fields.
    fn receive(&mut self) -> Result<(u8, Vec<Value>), BoltError> {
        let mut message = Vec::new();
        loop {
            let mut size = [0u8; 2];
            self.stream.read_exact(&mut size).map_err(io("receiving"))?;
            let size = u16::from_be_bytes(size) as usize;
            if size == 0 {
                if message.is_empty() {
                    continue; // a keep-alive NOOP between messages
                }
                break;
            }
            if message.len() + size > MAX_MESSAGE {
                return Err(BoltError::Protocol("a message over 64 MiB".into()));
            }
            let start = message.len();
            message.resize(start + size, 0);
            self.stream
                .read_exact(message.get_mut(start..).unwrap_or_default())
                .map_err(io("receiving"))?;
        }
        match Decoder::new(&message).value() {
            Ok(Value::Struct(tag, fields)) => Ok((tag, fields)),
            Ok(other) => Err(BoltError::Protocol(format!("a message is {other:?}"))),
            Err(e) => Err(BoltError::Protocol(e.to_string())),
        }
    }

    /// The next summary message: SUCCESS metadata, or the FAILURE as an error.
    fn summary(&mut self) -> Result<Value, BoltError> {
        let (tag, mut fields) = self.receive()?;
        let meta = fields.pop().unwrap_or(Value::Map(Vec::new()));
        match tag {
            SUCCESS => Ok(meta),
            FAILURE => Err(failure(&meta)),
            IGNORED => Err(BoltError::Server {
                code: "Ignored".into(),
                message: "ignored after an earlier failure".into(),
            }),
            other => Err(BoltError::Protocol(format!(
                "expected a summary, got message {other:#04x}"
            ))),
        }
    }

    /// Run `query` with `params` as an auto-commit transaction (`extra` carries the
    /// database and the transaction metadata) and pull every row, in one round trip.
    pub fn run(&mut self, query: &str, params: Value, extra: Value) -> Result<Rows, BoltError> {
        let params = match self.strings {
            Strings::Verbatim => params,
            Strings::Escaped => escape_strings(params),
        };
        self.run_raw(query, params, extra)
    }

    fn run_raw(&mut self, query: &str, params: Value, extra: Value) -> Result<Rows, BoltError> {
        self.send_all(&[
            (RUN, vec![query.into(), params, extra]),
            (PULL, vec![map([("n", Value::Int(-1))])]),
        ])?;
        let meta = match self.summary() {
            Ok(meta) => meta,
            Err(BoltError::Server { code, message }) => {
                self.reset()?;
                return Err(BoltError::Server { code, message });
            }
            Err(other) => return Err(other),
        };
        let mut rows = Rows::default();
        if let Some(Value::List(fields)) = meta.get("fields") {
            rows.fields = fields
                .iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect();
        }
        loop {
            let (tag, mut fields) = self.receive()?;
            match tag {
                RECORD => match fields.pop() {
                    Some(Value::List(row)) => rows.rows.push(row),
                    _ => return Err(BoltError::Protocol("a record is not a list".into())),
                },
                SUCCESS => return Ok(rows),
                FAILURE => {
                    let error = failure(&fields.pop().unwrap_or(Value::Null));
                    self.reset()?;
                    return Err(error);
                }
                other => {
                    return Err(BoltError::Protocol(format!(
                        "unexpected message {other:#04x}"
                    )));
                }
            }
        }
    }

    /// Clear a failure: after one the server ignores everything until RESET. Servers
    /// differ in what they answer first (Neo4j: IGNORED for the pipelined PULL;
    /// FalkorDB: nothing for the PULL, then IGNORED and SUCCESS for the RESET), so read
    /// up to the SUCCESS.
    fn reset(&mut self) -> Result<(), BoltError> {
        self.send(RESET, vec![])?;
        loop {
            match self.receive()? {
                (SUCCESS, _) => return Ok(()),
                (IGNORED, _) => continue,
                (FAILURE, mut fields) => return Err(failure(&fields.pop().unwrap_or(Value::Null))),
                (other, _) => {
                    return Err(BoltError::Protocol(format!(
                        "unexpected message {other:#04x} after RESET"
                    )));
                }
            }
        }
    }

    /// Say goodbye (best effort) and close.
    pub fn close(mut self) {
        let _ = self.send(GOODBYE, vec![]);
    }
}

fn failure(meta: &Value) -> BoltError {
    let text = |key: &str| {
        meta.get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    // Bolt 5.7 renamed `code` to `neo4j_code`.
    let code = match text("code") {
        c if c.is_empty() => text("neo4j_code"),
        c => c,
    };
    BoltError::Server {
        code,
        message: text("message"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_reaches_every_string_and_only_strings() {
        let value = map([
            ("a", Value::from("it's a \\ path")),
            ("b", Value::List(vec![Value::from("x'"), Value::Int(1)])),
            ("c", Value::from("plain")),
        ]);
        assert_eq!(
            escape_strings(value),
            map([
                ("a", Value::from("it\\'s a \\\\ path")),
                ("b", Value::List(vec![Value::from("x\\'"), Value::Int(1)])),
                ("c", Value::from("plain")),
            ])
        );
    }
}
