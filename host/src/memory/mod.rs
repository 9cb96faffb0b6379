//! The host API of the memory services: each operation takes validated input, runs as one
//! traced request through the service component, and returns structured output or a
//! typed [`MemoryError`] (the codes the MCP tools report). The MCP gateway is a thin layer
//! over this; tests and benchmarks call it directly.

/// `From` both ways between one of our enums and the WIT enum with the same cases.
macro_rules! same_cases {
    ($ours:ident, $theirs:ty, $($case:ident),+) => {
        impl From<$ours> for $theirs {
            fn from(value: $ours) -> Self {
                match value { $($ours::$case => <$theirs>::$case),+ }
            }
        }
        impl From<$theirs> for $ours {
            fn from(value: $theirs) -> Self {
                match value { $(<$theirs>::$case => $ours::$case),+ }
            }
        }
    };
}

mod embedding;
mod episodic;
pub mod import;
mod procedural;
mod semantic;
mod system;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::KeyValue;
use serde::Serialize;

use wasmtime::component::{ComponentNamedList, Lift, Lower};

use crate::bindings::api::ww::memory::types::Error as WitError;

use crate::plugins::{CallError, ComponentHost, Request, RequestCall, Role, TrapReason};
use crate::tracing_capability::Exception;

pub use embedding::*;
pub use episodic::*;
pub use procedural::*;
pub use semantic::*;
pub use system::*;

/// What kind of failure an operation had, as the MCP tools report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// Bad arguments.
    ValidationError,
    /// An unknown id (or one of another session).
    NotFound,
    /// The store failed or is unreachable.
    StorageError,
    /// The embedder failed.
    EmbeddingError,
    /// A consolidation run failed.
    ConsolidationError,
    /// A memory service itself failed (a trap or panic in it); the next call gets a fresh
    /// instance.
    InternalError,
}

impl ErrorCode {
    /// The code as written in results (`VALIDATION_ERROR`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationError => "VALIDATION_ERROR",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::StorageError => "STORAGE_ERROR",
            ErrorCode::EmbeddingError => "EMBEDDING_ERROR",
            ErrorCode::ConsolidationError => "CONSOLIDATION_ERROR",
            ErrorCode::InternalError => "INTERNAL_ERROR",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed operation: `{code, message, field?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct MemoryError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What happened, for a person (never an internal address).
    pub message: String,
    /// The argument at fault, for validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl MemoryError {
    /// Bad argument `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::ValidationError,
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }

    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
        }
    }

    /// The error a service returned, typed by its WIT variant.
    fn from_wit(error: WitError) -> Self {
        match error {
            WitError::Validation(v) => Self {
                code: ErrorCode::ValidationError,
                message: v.message,
                field: v.field.map(|f| f.replace('-', "_")),
            },
            WitError::NotFound(m) => Self::new(ErrorCode::NotFound, m),
            WitError::Storage(m) => Self::new(ErrorCode::StorageError, m),
            WitError::Embedding(m) => Self::new(ErrorCode::EmbeddingError, m),
            WitError::Consolidation(m) => Self::new(ErrorCode::ConsolidationError, m),
        }
    }
}

/// Tool arguments from JSON: wrong types, missing or unknown fields become a
/// `VALIDATION_ERROR` naming the field.
pub fn arguments<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, MemoryError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        // A missing field is reported at its parent (an unknown one at itself); the
        // message names it.
        let named = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|prefix| inner.strip_prefix(prefix))
            .and_then(|rest| rest.split('`').next());
        let field = match (path.as_str(), named) {
            (".", Some(name)) => Some(name.to_owned()),
            (".", None) => None,
            (path, Some(name)) if path.rsplit('.').next() != Some(name) => {
                Some(format!("{path}.{name}"))
            }
            (path, _) => Some(path.to_owned()),
        };
        MemoryError {
            code: ErrorCode::ValidationError,
            message: inner,
            field,
        }
    })
}

/// An optional number argument must be finite when given (JSON has no NaN, the Rust API
/// does).
fn finite(field: &str, value: Option<f64>) -> Result<(), MemoryError> {
    match value {
        Some(v) if !v.is_finite() => Err(MemoryError::invalid(field, "must be a finite number")),
        _ => Ok(()),
    }
}

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// An RFC 3339 time (`2026-11-24T09:30:00Z`, any offset) as milliseconds.
pub fn parse_time(field: &str, text: &str) -> Result<Millis, MemoryError> {
    text.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| {
            MemoryError::invalid(
                field,
                format!("expected an RFC 3339 time such as 2026-11-24T09:30:00Z ({e})"),
            )
        })
}

/// Milliseconds as RFC 3339 UTC.
pub fn format_time(ms: Millis) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

/// The span of a sampled request that wrote a memory: open it in the trace backend
/// (Jaeger `/trace/<trace_id>`, Phoenix's trace view) to see how the memory came to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct TraceRef {
    /// W3C trace id, 32 lowercase hex digits.
    pub trace_id: String,
    /// W3C span id, 16 lowercase hex digits: the service span that wrote it.
    pub span_id: String,
}

impl From<crate::bindings::api::ww::memory::types::TraceRef> for TraceRef {
    fn from(t: crate::bindings::api::ww::memory::types::TraceRef) -> Self {
        Self {
            trace_id: t.trace_id,
            span_id: t.span_id,
        }
    }
}

/// The memory services behind one API: validated calls into the components the
/// configuration chose, one traced request each.
#[derive(Clone)]
pub struct Memory {
    host: Arc<ComponentHost>,
}

impl Memory {
    /// The API over a loaded host.
    pub fn new(host: Arc<ComponentHost>) -> Self {
        Self { host }
    }

    /// The host underneath.
    pub fn host(&self) -> &Arc<ComponentHost> {
        &self.host
    }

    /// The error for a component call that failed (a trap somewhere down the chain),
    /// typed by the role of the component that failed first.
    fn call_failure(&self, error: &CallError) -> MemoryError {
        let mut failed = error;
        while let CallError::Trap {
            reason: TrapReason::Callee(callee),
            ..
        } = failed
        {
            failed = callee;
        }
        let role = self
            .host
            .exporters_of(failed.component())
            .find_map(Role::of_interface);
        let code = match role {
            Some(Role::VectorStore | Role::GraphStore) => ErrorCode::StorageError,
            Some(Role::Embedder) => ErrorCode::EmbeddingError,
            _ => ErrorCode::InternalError,
        };
        MemoryError::new(code, error.to_string())
    }

    /// A request refused before any component ran (bad arguments): its root span, failed.
    pub fn reject(&self, request: Request, error: &MemoryError) {
        let mut call = self.host.begin(request);
        mark_failed(&mut call, error);
    }

    /// Run `interface#function` with typed `params` as the request `request`, and mark
    /// its root span with the outcome.
    async fn run<P, T>(
        &self,
        request: Request,
        interface: &str,
        function: &str,
        params: P,
    ) -> Result<T, MemoryError>
    where
        P: ComponentNamedList + Lower + Send + Sync + 'static,
        (Result<T, WitError>,): ComponentNamedList + Lift + Send + Sync + 'static,
    {
        let mut call = self.host.begin(request);
        let result = self.call_in(&mut call, interface, function, params).await;
        if let Err(error) = &result {
            mark_failed(&mut call, error);
        }
        result
    }

    /// One call within the request `call`, its outcome typed.
    async fn call_in<P, T>(
        &self,
        call: &mut RequestCall<'_>,
        interface: &str,
        function: &str,
        params: P,
    ) -> Result<T, MemoryError>
    where
        P: ComponentNamedList + Lower + Send + Sync + 'static,
        (Result<T, WitError>,): ComponentNamedList + Lift + Send + Sync + 'static,
    {
        match call
            .invoke_typed::<P, (Result<T, WitError>,)>(interface, function, params)
            .await
        {
            Ok((Ok(value),)) => Ok(value),
            Ok((Err(error),)) => Err(MemoryError::from_wit(error)),
            Err(error) => Err(self.call_failure(&error)),
        }
    }
}

/// A failed operation's root span: its code, and an `exception` event.
fn mark_failed(call: &mut RequestCall<'_>, error: &MemoryError) {
    call.annotate(vec![KeyValue::new("ww.error.code", error.code.as_str())]);
    call.set_error_code(error.code.as_str());
    call.fail(Exception {
        kind: error.code.as_str().to_owned(),
        message: error.message.clone(),
        stacktrace: None,
    });
}
