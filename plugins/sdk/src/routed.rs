//! The host-routed imports a component calls, each sending this component's deferred span
//! starts first (see [`crate::span`]): the host opens its boundary span around a routed
//! call under the request's innermost span, which must be the caller's own.
//!
//! wit-bindgen offers no hook before an import call, so each routed function is wrapped
//! here by name; an explicit item shadows the module's glob re-export of the generated
//! one, and everything else (types, resources) passes through unchanged.

/// `module` re-exports `raw`, with each listed function wrapped.
macro_rules! routed {
    ($(#[$attr:meta])* $module:ident = $($raw:ident)::+ {
        $(fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty;)*
    }) => {
        $(#[$attr])*
        pub mod $module {
            pub use $crate::bindings::$($raw)::+::*;
            use $crate::bindings::$($raw)::+ as raw;

            $(
                #[doc = concat!("`", stringify!($name), "`, routed by the host (deferred span starts sent first).")]
                pub fn $name($($arg: $ty),*) -> $ret {
                    $crate::span::flush_span_starts();
                    raw::$name($($arg),*)
                }
            )*
        }
    };
}

routed! {
    /// The vector store of the service's configuration.
    vector_store = episodic_service::ww::memory::vector_store {
        fn ensure_collection(collection: Collection, embedder: &EmbedderId) -> Result<(), Error>;
        fn describe_collection(collection: Collection) -> Result<Option<CollectionInfo>, Error>;
        fn set_embedder(collection: Collection, embedder: &EmbedderId) -> Result<(), Error>;
        fn upsert(collection: Collection, points: &[Point]) -> Result<(), Error>;
        fn search(request: &SearchRequest) -> Result<Vec<ScoredPoint>, Error>;
        fn get(collection: Collection, ids: &[String], with_vectors: bool) -> Result<Vec<StoredPoint>, Error>;
        fn delete(collection: Collection, ids: &[String]) -> Result<u32, Error>;
        fn update_payload(collection: Collection, updates: &[PayloadUpdate]) -> Result<(), Error>;
        fn change_payload(collection: Collection, changes: &[PayloadChange]) -> Result<(), Error>;
        fn count(collection: Collection, filter: &Filter) -> Result<u64, Error>;
        fn scroll(collection: Collection, filter: &Filter, after: Option<&str>, limit: u32, with_vectors: bool) -> Result<Vec<StoredPoint>, Error>;
        fn health() -> StoreHealth;
    }
}

routed! {
    /// The graph store of the service's configuration.
    graph_store = episodic_service::ww::memory::graph_store {
        fn upsert_node(node: &Node) -> Result<(), Error>;
        fn update_node(id: &str, properties: &[Field]) -> Result<(), Error>;
        fn get_node(id: &str) -> Result<Option<Node>, Error>;
        fn find_nodes(label: NodeLabel, conditions: &[Condition], limit: u32) -> Result<Vec<Node>, Error>;
        fn delete_node(id: &str) -> Result<bool, Error>;
        fn upsert_edge(edge: &Edge) -> Result<(), Error>;
        fn get_edge(source: &str, target: &str, relation: RelationType) -> Result<Option<Edge>, Error>;
        fn upsert_graph(nodes: &[Node], edges: &[Edge]) -> Result<(), Error>;
        fn reweight_edges(changes: &[EdgeReweight]) -> Result<u32, Error>;
        fn neighbors(id: &str, direction: Direction, relations: &[RelationType], limit: u32) -> Result<Vec<Neighbor>, Error>;
        fn degree(id: &str, relations: &[RelationType]) -> Result<u32, Error>;
        fn count_nodes(label: NodeLabel) -> Result<u64, Error>;
        fn health() -> StoreHealth;
    }
}

routed! {
    /// The embedder of the service's configuration.
    embedder = episodic_service::ww::memory::embedder {
        fn dimension() -> u32;
        fn model() -> String;
        fn embed(texts: &[String]) -> Result<Vec<Vec<f32>>, Error>;
    }
}

routed! {
    /// The worker fixture, reached through the host.
    worker = fixture_caller::ww::fixtures::worker {
        fn work(input: &str, mode: WorkMode) -> Result<String, String>;
        fn deepest_context() -> String;
        fn noop() -> ();
        fn tcp_connect(address: &str) -> Result<(), String>;
        fn http_get(url: &str) -> Result<u16, String>;
        fn fetch_with_baggage(url: &str) -> Result<Vec<(String, String)>, String>;
    }
}
