//! Which session a call belongs to, and why.
//!
//! Episodes belong to a session; entities and skills are shared. A call's session is
//! never taken from its arguments. It is, in order:
//! 1. over HTTP, the session the request's bearer token is bound to in the tokens file
//!    ([`TokenBindings`]);
//! 2. the session given to the process (`WW_SESSION_ID` or `--session`);
//! 3. the data directory's default session ([`default_session`]): created on the first
//!    start and kept in `<data_dir>/default-session`, so a restart continues the same
//!    memory.
//!
//! Tokens are kept as SHA-256 digests, never in clear, and a presented token is compared
//! with every digest in constant time.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// The file in a data directory that keeps its default session.
pub const DEFAULT_SESSION_FILE: &str = "default-session";

/// Where a session came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Given to the process: `WW_SESSION_ID` or `--session`.
    Given,
    /// The data directory's default session, kept in this file.
    DataDirectory(PathBuf),
    /// Bound to the bearer token the request carried (the tokens file).
    Token,
}

/// A session and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The session id.
    pub id: Arc<str>,
    /// Why it is this one.
    pub source: Source,
}

impl Session {
    /// A session given by id (`WW_SESSION_ID`, `--session`, a test).
    pub fn given(id: &str) -> Self {
        Self {
            id: Arc::from(id),
            source: Source::Given,
        }
    }

    /// `given`, `data-directory` or `token`: for `get_session_id`.
    pub fn source_name(&self) -> &'static str {
        match self.source {
            Source::Given => "given",
            Source::DataDirectory(_) => "data-directory",
            Source::Token => "token",
        }
    }

    /// Why this session, in a sentence's words.
    pub fn reason(&self) -> String {
        match &self.source {
            Source::Given => "given by WW_SESSION_ID or --session".to_owned(),
            Source::DataDirectory(file) => format!(
                "the data directory's default session, kept in {}; WW_SESSION_ID or \
                 --session chooses another",
                file.display()
            ),
            Source::Token => "bound to the request's bearer token".to_owned(),
        }
    }
}

impl From<&str> for Session {
    fn from(id: &str) -> Self {
        Self::given(id)
    }
}

impl fmt::Display for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session {} ({})", self.id, self.reason())
    }
}

/// Why a session or the tokens file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A file's content is not what it must be.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SessionError + '_ {
    move |source| SessionError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The longest session id, in characters: room for a UUID or a user name with a
/// prefix, short enough for a span attribute and a log line.
pub const MAX_ID_CHARS: usize = 128;

/// What a session id must look like, for error messages.
pub const ID_RULE: &str = "1 to 128 characters, no spaces";

/// Whether `id` can name a session: 1 to [`MAX_ID_CHARS`] characters, none of them a
/// control character or white space (a session id appears in logs, spans and files).
pub fn valid_id(id: &str) -> bool {
    (1..=MAX_ID_CHARS).contains(&id.chars().count())
        && !id.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// The default session of the data directory `dir`, created (a new UUID) on first use.
///
/// Created atomically and without replacing one another process made at the same
/// moment: the id is written to a temporary file, synced, then hard-linked to its name
/// (which fails if the name exists, whereupon the existing one is read) and the
/// directory synced.
pub fn default_session(dir: &Path) -> Result<Session, SessionError> {
    let path = dir.join(DEFAULT_SESSION_FILE);
    let session = |id: &str| Session {
        id: Arc::from(id),
        source: Source::DataDirectory(path.clone()),
    };
    if let Some(id) = read_default(&path)? {
        return Ok(session(&id));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let id = uuid::Uuid::new_v4().to_string();
    let temporary = dir.join(format!(".{DEFAULT_SESSION_FILE}.{id}"));
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        writeln!(file, "{id}")?;
        file.sync_all()
    })();
    written.map_err(io(&temporary))?;
    let linked = std::fs::hard_link(&temporary, &path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => {
            sync_dir(dir)?;
            Ok(session(&id))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let id = read_default(&path)?.ok_or_else(|| SessionError::Invalid {
                path: path.clone(),
                reason: "appeared empty while being created".to_owned(),
            })?;
            Ok(session(&id))
        }
        Err(e) => Err(io(&path)(e)),
    }
}

fn read_default(path: &Path) -> Result<Option<String>, SessionError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let id = text.trim();
            if valid_id(id) {
                Ok(Some(id.to_owned()))
            } else {
                Err(SessionError::Invalid {
                    path: path.to_owned(),
                    reason: "does not hold a session id (one line, no spaces); delete it \
                             to start a new default session"
                        .to_owned(),
                })
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), SessionError> {
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

/// The bearer tokens of a server and the session each is bound to, read from a TOML
/// file of `[[token]]` tables with `sha256` (the token's digest, hex) and `session`.
/// `ww-memory token add SESSION` makes a token and appends its entry.
#[derive(Debug, Default)]
pub struct TokenBindings {
    entries: Vec<([u8; 32], Arc<str>)>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    sha256: String,
    session: String,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl TokenBindings {
    /// Read the tokens file at `path`.
    pub fn load(path: &Path) -> Result<Self, SessionError> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let invalid = |reason: String| SessionError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let file: TokensFile = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let mut entries = Vec::with_capacity(file.token.len());
        for (n, entry) in file.token.into_iter().enumerate() {
            let sha = unhex(&entry.sha256).ok_or_else(|| {
                invalid(format!(
                    "token {}: sha256 must be 64 hex digits (the token's SHA-256)",
                    n + 1
                ))
            })?;
            if !valid_id(&entry.session) {
                return Err(invalid(format!(
                    "token {}: {:?} is not a session id ({ID_RULE})",
                    n + 1,
                    entry.session
                )));
            }
            entries.push((sha, Arc::from(entry.session.as_str())));
        }
        Ok(Self { entries })
    }

    /// How many tokens are bound.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no token is bound.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The session `token` is bound to. Every entry is compared, each in constant time,
    /// so the answer's timing says nothing about which digest came close.
    pub fn session_for(&self, token: &str) -> Option<Session> {
        let presented = digest(token);
        let mut found = None;
        for (sha, session) in &self.entries {
            if bool::from(sha.ct_eq(&presented)) {
                found = Some(session);
            }
        }
        found.map(|id| Session {
            id: id.clone(),
            source: Source::Token,
        })
    }

    /// A new token bound to `session`, its digest appended to the file at `path`
    /// (created if missing); the token itself is returned, to be shown once.
    pub fn add(path: &Path, session: &str) -> Result<String, SessionError> {
        if !valid_id(session) {
            return Err(SessionError::Invalid {
                path: path.to_owned(),
                reason: format!("{session:?} is not a session id ({ID_RULE})"),
            });
        }
        if path.exists() {
            // Refuse to append to a file that does not read as a tokens file.
            Self::load(path)?;
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| SessionError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(format!("no randomness for a token: {e}")),
        })?;
        let token = format!("ww_{}", hex(&secret));
        let entry = format!(
            "\n[[token]]\nsha256 = \"{}\"\nsession = {}\n",
            hex(&digest(&token)),
            toml::Value::String(session.to_owned())
        );
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io(path))?;
        file.write_all(entry.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io(path))?;
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_session_is_created_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("ww-session-{}", uuid::Uuid::new_v4()));
        let first = default_session(&dir).unwrap();
        let again = default_session(&dir).unwrap();
        assert_eq!(first, again);
        assert_eq!(first.source_name(), "data-directory");
        assert!(uuid::Uuid::parse_str(&first.id).is_ok());
        std::fs::write(dir.join(DEFAULT_SESSION_FILE), "two words\n").unwrap();
        assert!(matches!(
            default_session(&dir),
            Err(SessionError::Invalid { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tokens_bind_sessions_by_digest() {
        let path = std::env::temp_dir().join(format!("ww-tokens-{}.toml", uuid::Uuid::new_v4()));
        let a = TokenBindings::add(&path, "agent-a").unwrap();
        let b = TokenBindings::add(&path, "agent-b").unwrap();
        assert_ne!(a, b);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&a) && !text.contains(&b),
            "tokens are kept hashed"
        );
        let bindings = TokenBindings::load(&path).unwrap();
        assert_eq!(bindings.len(), 2);
        assert_eq!(&*bindings.session_for(&a).unwrap().id, "agent-a");
        assert_eq!(&*bindings.session_for(&b).unwrap().id, "agent-b");
        assert!(bindings.session_for("ww_not-a-token").is_none());
        assert!(TokenBindings::add(&path, "has space").is_err());
        std::fs::remove_file(path).unwrap();
    }
}
