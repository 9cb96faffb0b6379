//! Which embedder wrote the stored vectors: checked against the configured one before a
//! server starts (vectors of two embedders cannot be compared, so a store written by
//! another is refused, saying what to do), and rebuilt by `ww-memory reembed`.

use super::{Memory, MemoryError};
use crate::bindings::api::ww::memory::{types, vector_store};
use crate::plugins::Request;

const EMBEDDER: &str = "ww:memory/embedder@0.1.0";
const VECTORS: &str = "ww:memory/vector-store@0.1.0";

/// The embedder the configuration names, as collections record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedderName {
    /// The model (`embedder.model`).
    pub model: String,
    /// The vectors' length.
    pub dimension: u32,
}

impl std::fmt::Display for EmbedderName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} dimensions)", self.model, self.dimension)
    }
}

/// A collection whose vectors another embedder wrote.
#[derive(Debug, Clone)]
pub struct Mismatch {
    /// `ww_episodes`, `ww_entities`, `ww_procedures`.
    pub collection: String,
    /// What wrote it (`None`: a store written before embedders were recorded).
    pub recorded: Option<EmbedderName>,
    /// Points in it.
    pub points: u64,
}

/// The stores' vectors were written by another embedder than the configured one.
#[derive(Debug, thiserror::Error)]
#[error(
    "the store's vectors were not made by the configured embedder {configured}: {}. \
     Vectors of different embedders cannot be compared. Run `ww-memory reembed` (same \
     configuration) to rebuild them from the stored text, or configure the embedder that \
     wrote them",
    .mismatches.iter().map(|m| format!(
        "{} holds {} points of {}",
        m.collection,
        m.points,
        m.recorded.as_ref().map_or_else(|| "an unrecorded embedder".to_owned(), ToString::to_string)
    )).collect::<Vec<_>>().join(", ")
)]
pub struct EmbedderChanged {
    /// The configured embedder.
    pub configured: EmbedderName,
    /// The collections it did not write.
    pub mismatches: Vec<Mismatch>,
}

/// Why the store cannot be served with the configured embedder.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The stores or the embedder could not be asked.
    #[error("cannot check which embedder wrote the store: {}", .0.message)]
    Unavailable(MemoryError),
    /// Another embedder wrote the store.
    #[error(transparent)]
    Changed(#[from] EmbedderChanged),
    /// The embedder makes no vectors (a model embedder whose model did not load).
    #[error(
        "the embedder {0} makes vectors of no dimension: its model did not load (is its \
         model_dir or WW_MODEL_DIR right? `make model` fetches the default one); its \
         error is on stderr"
    )]
    NoVectors(String),
}

/// A memory service whose vectors `reembed` rebuilds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReembedTarget {
    /// Episodes (their content).
    Episodes,
    /// Entities (name and summary).
    Entities,
    /// Skills (name, domain, trigger and steps).
    Skills,
}

impl ReembedTarget {
    /// Every target, in the order `reembed` takes them.
    pub const ALL: [ReembedTarget; 3] = [Self::Episodes, Self::Entities, Self::Skills];

    /// The collection's name.
    pub fn collection(self) -> &'static str {
        match self {
            Self::Episodes => "ww_episodes",
            Self::Entities => "ww_entities",
            Self::Skills => "ww_procedures",
        }
    }

    fn interface(self) -> &'static str {
        match self {
            Self::Episodes => "ww:memory/episodic@0.1.0",
            Self::Entities => "ww:memory/semantic@0.1.0",
            Self::Skills => "ww:memory/procedural@0.1.0",
        }
    }
}

/// One page of a re-embedding.
#[derive(Debug, Clone)]
pub struct ReembedPage {
    /// Points rebuilt in this page.
    pub rebuilt: u32,
    /// Where the next page starts; `None` when the collection is done.
    pub next: Option<String>,
    /// Points in the collection.
    pub total: u64,
}

impl Memory {
    /// The configured embedder's model and dimension.
    pub async fn embedder(&self) -> Result<EmbedderName, MemoryError> {
        let mut call = self.host.begin(Request::new("ww.embedder"));
        let (model,): (String,) = call
            .invoke_typed(EMBEDDER, "model", ())
            .await
            .map_err(|e| self.call_failure(&e))?;
        let (dimension,): (u32,) = call
            .invoke_typed(EMBEDDER, "dimension", ())
            .await
            .map_err(|e| self.call_failure(&e))?;
        Ok(EmbedderName { model, dimension })
    }

    /// Every collection that holds vectors the configured embedder did not write.
    pub async fn embedder_mismatches(
        &self,
        configured: &EmbedderName,
    ) -> Result<Vec<Mismatch>, MemoryError> {
        let mut call = self.host.begin(Request::new("ww.check_embedder"));
        let mut mismatches = Vec::new();
        for (collection, name) in [
            (vector_store::Collection::Episodes, "ww_episodes"),
            (vector_store::Collection::Entities, "ww_entities"),
            (vector_store::Collection::Procedures, "ww_procedures"),
        ] {
            let info: Option<vector_store::CollectionInfo> = self
                .call_in(&mut call, VECTORS, "describe-collection", (collection,))
                .await?;
            let Some(info) = info else { continue };
            let recorded = info.embedder.map(|e| EmbedderName {
                model: e.model,
                dimension: e.dimension,
            });
            let same = recorded.as_ref() == Some(configured);
            // An empty collection takes whichever embedder writes first.
            if !same && info.points > 0 {
                mismatches.push(Mismatch {
                    collection: name.to_owned(),
                    recorded,
                    points: info.points,
                });
            }
        }
        Ok(mismatches)
    }

    /// Refuse a store written by another embedder than the configured one.
    pub async fn check_embedder(&self) -> Result<EmbedderName, CheckError> {
        let configured = self.embedder().await.map_err(CheckError::Unavailable)?;
        if configured.dimension == 0 {
            return Err(CheckError::NoVectors(configured.model));
        }
        let mismatches = self
            .embedder_mismatches(&configured)
            .await
            .map_err(CheckError::Unavailable)?;
        if mismatches.is_empty() {
            Ok(configured)
        } else {
            Err(CheckError::Changed(EmbedderChanged {
                configured,
                mismatches,
            }))
        }
    }

    /// Rebuild up to `limit` vectors of `target` after `after` with the configured
    /// embedder, as one traced request.
    pub async fn reembed_page(
        &self,
        target: ReembedTarget,
        after: Option<String>,
        limit: u32,
    ) -> Result<ReembedPage, MemoryError> {
        let page: types::ReembedPage = self
            .run(
                Request::new(format!("ww.reembed.{}", target.collection())),
                target.interface(),
                "reembed",
                (after, limit),
            )
            .await?;
        Ok(ReembedPage {
            rebuilt: page.rebuilt,
            next: page.next,
            total: page.total,
        })
    }
}
