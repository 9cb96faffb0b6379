//! Every `wit_bindgen::generate!` a guest needs, in one place. Plugin crates never see
//! these modules directly; they use the re-exports in the crate root.

wit_bindgen::generate!({
    world: "host-capabilities",
    path: "../../wit/v0.1.0",
    // Borrowed parameter types: a span start passes `&str` keys and values straight
    // from the guest's buffers, with no `String` built per attribute.
    ownership: Borrowing { duplicate_if_necessary: true },
});

/// Bindings of `wasi:nn` (the host runs a model's graph), for the `nn` feature.
#[cfg(feature = "nn")]
pub mod wasi_nn {
    wit_bindgen::generate!({
        world: "wasi:nn/ml",
        path: "../../wit/wasi-nn",
    });
}

/// Bindings of `wasi:config/store`, which the settings come through.
pub mod component_settings {
    wit_bindgen::generate!({
        world: "component-settings",
        path: "../../wit/v0.1.0",
        generate_all,
    });
}

/// Bindings of the worker fixture's world.
pub mod fixture_worker {
    wit_bindgen::generate!({
        world: "ww:fixtures/worker-component@0.1.0",
        // The fixtures are a package of their own, on top of the product's.
        path: ["../../wit/v0.1.0", "../../wit/fixtures"],
        with: {
            "ww:memory/tracing@0.1.0": crate::bindings::ww::memory::tracing,
            "ww:memory/metrics@0.1.0": crate::bindings::ww::memory::metrics,
        },
        pub_export_macro: true,
        export_macro_name: "export_fixture_worker",
        default_bindings_module: "ww_guest::bindings::fixture_worker",
    });
}

/// Bindings of the caller fixture's world.
pub mod fixture_caller {
    wit_bindgen::generate!({
        world: "ww:fixtures/caller-component@0.1.0",
        path: ["../../wit/v0.1.0", "../../wit/fixtures"],
        with: {
            "ww:memory/tracing@0.1.0": crate::bindings::ww::memory::tracing,
            "ww:memory/metrics@0.1.0": crate::bindings::ww::memory::metrics,
        },
        pub_export_macro: true,
        export_macro_name: "export_fixture_caller",
        default_bindings_module: "ww_guest::bindings::fixture_caller",
    });
}

/// Bindings of the embedder world.
pub mod embedder_provider {
    wit_bindgen::generate!({
        world: "embedder-provider",
        path: "../../wit/v0.1.0",
        with: {
            "ww:memory/tracing@0.1.0": crate::bindings::ww::memory::tracing,
            "ww:memory/metrics@0.1.0": crate::bindings::ww::memory::metrics,
        },
        pub_export_macro: true,
        export_macro_name: "export_embedder",
        default_bindings_module: "ww_guest::bindings::embedder_provider",
    });
}

/// Bindings of the vector-store-adapter world: a component serving the vector store
/// (the Qdrant adapter alone; the embedded store with the graph store beside it). Its
/// types can be serialised, so a store can log the records it is given as they are.
///
/// A component serving both stores exports both adapter worlds (`export_combined_store!`):
/// wit-bindgen names an export's glue after its interface, so one crate cannot hold a
/// combined world's export macros beside the adapters'.
pub mod vector_store_adapter {
    wit_bindgen::generate!({
        world: "vector-store-adapter",
        path: "../../wit/v0.1.0",
        with: {
            "ww:memory/tracing@0.1.0": crate::bindings::ww::memory::tracing,
            "ww:memory/metrics@0.1.0": crate::bindings::ww::memory::metrics,
        },
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
        pub_export_macro: true,
        export_macro_name: "export_vector_store",
        default_bindings_module: "ww_guest::bindings::vector_store_adapter",
    });
}

/// Bindings of the upkept world: `maintenance`, which the host calls to run the upkeep
/// a component asked for (`crate::upkeep`).
pub mod upkept {
    wit_bindgen::generate!({
        world: "upkept",
        path: "../../wit/v0.1.0",
        with: {
            "ww:memory/tracing@0.1.0": crate::bindings::ww::memory::tracing,
            "ww:memory/metrics@0.1.0": crate::bindings::ww::memory::metrics,
            "ww:memory/upkeep@0.1.0": crate::bindings::ww::memory::upkeep,
        },
        pub_export_macro: true,
        export_macro_name: "export_maintenance",
        default_bindings_module: "ww_guest::bindings::upkept",
    });
}

/// Bindings of the graph-store-adapter world (the Neo4j adapter; the embedded store's
/// graph). Its shared types are the vector store's, so a combined store has one set.
pub mod graph_store_adapter {
    wit_bindgen::generate!({
        world: "graph-store-adapter",
        path: "../../wit/v0.1.0",
        with: {
            "ww:memory/tracing@0.1.0": crate::bindings::ww::memory::tracing,
            "ww:memory/metrics@0.1.0": crate::bindings::ww::memory::metrics,
            "ww:memory/types@0.1.0": crate::bindings::vector_store_adapter::ww::memory::types,
        },
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
        pub_export_macro: true,
        export_macro_name: "export_graph_store",
        default_bindings_module: "ww_guest::bindings::graph_store_adapter",
    });
}

/// Bindings of the episodic-service world: the store and embedder clients it imports,
/// the episodic interface it exports.
pub mod episodic_service {
    wit_bindgen::generate!({
        world: "episodic-service",
        path: "../../wit/v0.1.0",
        with: {
            "ww:memory/tracing@0.1.0": crate::bindings::ww::memory::tracing,
            "ww:memory/metrics@0.1.0": crate::bindings::ww::memory::metrics,
            "ww:memory/progress@0.1.0": crate::bindings::ww::memory::progress,
        },
        pub_export_macro: true,
        export_macro_name: "export_episodic",
        default_bindings_module: "ww_guest::bindings::episodic_service",
    });
}

/// Bindings of the semantic-service world; its imports are the episodic world's (one set
/// of client types for every service).
pub mod semantic_service {
    wit_bindgen::generate!({
        world: "semantic-service",
        path: "../../wit/v0.1.0",
        with: {
            "ww:memory/tracing@0.1.0": crate::bindings::ww::memory::tracing,
            "ww:memory/metrics@0.1.0": crate::bindings::ww::memory::metrics,
            "ww:memory/progress@0.1.0": crate::bindings::ww::memory::progress,
            "ww:memory/types@0.1.0": crate::bindings::episodic_service::ww::memory::types,
            "ww:memory/vector-store@0.1.0": crate::bindings::episodic_service::ww::memory::vector_store,
            "ww:memory/graph-store@0.1.0": crate::bindings::episodic_service::ww::memory::graph_store,
            "ww:memory/embedder@0.1.0": crate::bindings::episodic_service::ww::memory::embedder,
        },
        pub_export_macro: true,
        export_macro_name: "export_semantic",
        default_bindings_module: "ww_guest::bindings::semantic_service",
    });
}

/// Bindings of the procedural-service world (imports shared as for semantic).
pub mod procedural_service {
    wit_bindgen::generate!({
        world: "procedural-service",
        path: "../../wit/v0.1.0",
        with: {
            "ww:memory/tracing@0.1.0": crate::bindings::ww::memory::tracing,
            "ww:memory/metrics@0.1.0": crate::bindings::ww::memory::metrics,
            "ww:memory/progress@0.1.0": crate::bindings::ww::memory::progress,
            "ww:memory/types@0.1.0": crate::bindings::episodic_service::ww::memory::types,
            "ww:memory/vector-store@0.1.0": crate::bindings::episodic_service::ww::memory::vector_store,
            "ww:memory/graph-store@0.1.0": crate::bindings::episodic_service::ww::memory::graph_store,
            "ww:memory/embedder@0.1.0": crate::bindings::episodic_service::ww::memory::embedder,
        },
        pub_export_macro: true,
        export_macro_name: "export_procedural",
        default_bindings_module: "ww_guest::bindings::procedural_service",
    });
}
