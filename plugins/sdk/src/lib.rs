//! The World Weaver guest SDK: tracing for plugin components without any WIT plumbing.
//!
//! A span is opened with [`span`] (a guard) or [`SpanBuilder`], or around a whole function
//! with [`traced`]. The host parents each span under the innermost open span of the same
//! request, whichever component opened it, so one request is one trace.
//!
//! ```no_run
//! use ww_guest::{add_span_attribute, add_span_event, get_trace_context, kv, span, traced};
//!
//! #[traced("episodic.recall", kind = Internal)]       // a span around the call;
//! fn recall(query: &str) -> Result<Vec<String>, String> { // an Err marks it ERROR
//!     add_span_attribute("query.length", query.len());   // on the current span
//!     let _batch = span("batch_processing").attr("batch_size", 100); // scoped span
//!     add_span_event("scored", vec![kv("count", 3)]);
//!     let _traceparent = get_trace_context().traceparent; // to inject into outgoing calls
//!     Ok(vec![])
//! }
//! ```
//!
//! An `Err` returned from a `#[traced]` function, or a panic anywhere, ends the span with
//! status ERROR and an `exception` event. Attributes and events added while a span is open
//! are buffered and sent when it ends. A span with no host call inside it (no routed call,
//! no span of its own, no metric) costs one host call, at its end, besides reading the
//! clock at its start; any other costs two (its start is sent before the first call that
//! needs it). Call the routed imports through [`services`] (they send deferred starts
//! first); anything else that calls the host on its own calls [`flush_span_starts`] first.

pub mod baggage;
#[doc(hidden)]
pub mod bindings;
pub mod calls;
pub mod change;
pub mod metrics;
#[cfg(feature = "nn")]
pub mod nn;
mod routed;
pub mod settings;
mod span;
mod value;

pub use span::{
    __private, Span, SpanBuilder, SpanKind, TraceContext, add_span_attribute, add_span_event,
    add_span_link, flush_span_starts, get_trace_context, span, tracing_enabled,
};
pub use value::{KeyValue, Value, kv};
pub use ww_guest_macros::traced;

#[doc(inline)]
pub use bindings::embedder_provider::export_embedder;
#[doc(inline)]
pub use bindings::episodic_service::export_episodic;
#[doc(inline)]
pub use bindings::fixture_caller::export_fixture_caller;
#[doc(inline)]
pub use bindings::fixture_worker::export_fixture_worker;
#[doc(inline)]
pub use bindings::graph_store_adapter::export_graph_store;
#[doc(inline)]
pub use bindings::procedural_service::export_procedural;
#[doc(inline)]
pub use bindings::semantic_service::export_semantic;
#[doc(inline)]
pub use bindings::upkept::export_maintenance;
#[doc(inline)]
pub use bindings::vector_store_adapter::export_vector_store;

/// The embedder role: implement [`embedder::Guest`] and call `ww_guest::export_embedder!`.
///
/// A complete embedder (the README's example, compiled here):
///
/// ```no_run
/// use ww_guest::embedder::{Error, Guest};
/// use ww_guest::{add_span_attribute, traced};
///
/// struct LetterEmbedder;
///
/// impl Guest for LetterEmbedder {
///     fn dimension() -> u32 { 26 }
///     fn model() -> String { "letters-v1".to_owned() }
///
///     #[traced("letters.embed")] // a span around the call, nested under the host's
///     fn embed(texts: Vec<String>) -> Result<Vec<Vec<f32>>, Error> {
///         add_span_attribute("embedder.texts", texts.len());
///         Ok(texts.iter().map(|text| {
///             let mut v = vec![0.0f32; 26];
///             text.bytes().filter(u8::is_ascii_alphabetic)
///                 .for_each(|b| v[usize::from(b.to_ascii_lowercase() - b'a')] += 1.0);
///             let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
///             v.into_iter().map(|x| x / norm).collect()
///         }).collect())
///     }
/// }
///
/// ww_guest::export_embedder!(LetterEmbedder);
/// ```
pub mod embedder {
    pub use crate::bindings::embedder_provider::exports::ww::memory::embedder::Guest;
    pub use crate::bindings::embedder_provider::ww::memory::types::{Error, ValidationError};
}

/// The store roles: a component serving both implements [`store::VectorStore`] and
/// [`store::GraphStore`] and calls `ww_guest::export_combined_store!`.
pub mod store {
    pub use crate::bindings::graph_store_adapter::exports::ww::memory::graph_store::{
        self as graph, Guest as GraphStore,
    };
    pub use crate::bindings::vector_store_adapter::exports::ww::memory::vector_store::{
        self as vector, Guest as VectorStore,
    };
    pub use crate::bindings::vector_store_adapter::ww::memory::types::{
        Condition, Error, Field, FieldValue, Filter, Range, StoreHealth, ValidationError,
    };
}

/// Export `$store` as both stores (it implements [`store::VectorStore`] and
/// [`store::GraphStore`]): the vector-store and graph-store adapter worlds together, which
/// the component model sees as one component exporting both (the `combined-store` world).
#[macro_export]
macro_rules! export_combined_store {
    ($store:ident) => {
        $crate::export_vector_store!($store);
        $crate::export_graph_store!($store);
    };
}

/// The vector-store role alone (a store of vectors only, e.g. Qdrant): implement
/// [`vector_store::Guest`] and call `ww_guest::export_vector_store!`. A component serving
/// both store roles uses [`store`] instead.
pub mod vector_store {
    pub use crate::bindings::vector_store_adapter::exports::ww::memory::vector_store::*;
    pub use crate::bindings::vector_store_adapter::ww::memory::types::{
        Condition, FieldValue, Range, ValidationError,
    };
}

/// The graph-store role alone (a store of the graph only, e.g. Neo4j): implement
/// [`graph_store::Guest`] and call `ww_guest::export_graph_store!`.
pub mod graph_store {
    pub use crate::bindings::graph_store_adapter::exports::ww::memory::graph_store::*;
    pub use crate::bindings::vector_store_adapter::ww::memory::types::{
        FieldValue, Range, ValidationError,
    };
}

/// The episodic service role: implement [`episodic::Guest`] and call
/// `ww_guest::export_episodic!`; reach the stores and the embedder through [`services`].
pub mod episodic {
    pub use crate::bindings::episodic_service::exports::ww::memory::episodic::*;
}

/// The semantic service role: implement [`semantic::Guest`], call `ww_guest::export_semantic!`.
pub mod semantic {
    pub use crate::bindings::semantic_service::exports::ww::memory::semantic::*;
}

/// The procedural service role: implement [`procedural::Guest`], call
/// `ww_guest::export_procedural!`.
pub mod procedural {
    pub use crate::bindings::procedural_service::exports::ww::memory::procedural::*;
}

/// What a memory service calls, each routed by the host to the component configured for
/// the role, with a boundary span around the call.
pub mod services {
    pub use crate::bindings::episodic_service::ww::memory::types::{
        Condition, Error, Field, FieldValue, Filter, Range, ReembedPage, StoreHealth,
        ValidationError,
    };
    pub use crate::routed::{embedder, graph_store, vector_store};
}

/// Work done outside requests: ask with [`upkeep::request`]; the host then calls the
/// component's [`upkeep::Maintenance::run`] (export it with `ww_guest::export_maintenance!`
/// and declare `run` long-running in `calls!`) on an instance of its own.
pub mod upkeep {
    pub use crate::bindings::upkept::exports::ww::memory::maintenance::Guest as Maintenance;

    /// Ask the host to run `task` once this call has returned (the same task asked again
    /// while it waits or runs is one task). False when the host runs no upkeep: do the work
    /// now.
    pub fn request(task: &str) -> bool {
        crate::bindings::ww::memory::upkeep::request(task)
    }
}

/// Tell the caller how far a long operation has got (`total` 0 when unknown); the host
/// forwards it as MCP progress when the client asked for it.
pub fn report_progress(done: u64, total: u64, message: &str) {
    bindings::ww::memory::progress::report(done, total, message);
}

/// Whether the request was cancelled (the client sent `notifications/cancelled` or went
/// away). A long operation checks between steps, stops at the next one and returns what
/// it has done; a short one need not look.
pub fn cancelled() -> bool {
    bindings::ww::memory::progress::cancelled()
}

/// The test fixtures' interfaces. Only the fixture components use these.
pub mod fixtures {
    /// Worker side: implement [`worker::Guest`] and call `ww_guest::export_fixture_worker!`.
    pub mod worker {
        pub use crate::bindings::fixture_worker::exports::ww::fixtures::worker::Guest;
        pub use crate::bindings::fixture_worker::ww::fixtures::types::WorkMode;
    }
    /// Caller side: implement [`caller::Guest`], call the worker through [`caller::worker`].
    pub mod caller {
        pub use crate::bindings::fixture_caller::exports::ww::fixtures::driver::Guest;
        pub use crate::bindings::fixture_caller::ww::fixtures::types::WorkMode;
        /// The worker, reached through the host.
        pub use crate::routed::worker;
    }
}
