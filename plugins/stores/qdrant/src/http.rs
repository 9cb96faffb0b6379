//! The adapter's Qdrant client: one base URL, JSON in and out, the `result` of every
//! answer or the error Qdrant gave.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};

/// The key of a collection's metadata under which the embedder that wrote it is kept.
pub const EMBEDDER_KEY: &str = "ww_embedder";
/// The name of a collection's sparse vector: its text's BM25 term weights, with the IDF
/// Qdrant keeps over the collection (the `idf` modifier).
pub const TEXT_VECTOR: &str = "text";
/// A request's timeout unless `timeout_ms` says otherwise: Qdrant answers a search in
/// milliseconds, so three seconds means it is down or overloaded, and the tool call
/// should fail well inside the host's deadline for the store's call.
const DEFAULT_TIMEOUT_MS: u64 = 3000;

fn embedder_json(embedder: &EmbedderId) -> Value {
    json!({ "model": embedder.model, "dimension": embedder.dimension })
}
use ww_guest::settings;

use crate::convert;
use crate::{Retrieval, SCROLL_PAGE};
use ww_guest::vector_store::{CollectionInfo, EmbedderId, StoredPoint};
use ww_guest::vector_store::{Error, ValidationError};

pub struct Qdrant {
    base: String,
    api_key: Option<String>,
    connect_timeout: Duration,
    /// How searches with query text rank (the `retrieval` setting).
    pub retrieval: Retrieval,
    /// Collections known to exist with the right dimension.
    ensured: HashSet<String>,
    /// Collections known to exist: whether each has the text's sparse vector.
    text_vectors: HashMap<String, bool>,
}

thread_local! {
    static CLIENT: RefCell<Option<Qdrant>> = const { RefCell::new(None) };
}

fn storage(message: impl std::fmt::Display) -> Error {
    Error::Storage(message.to_string())
}

/// Run `f` with the client (made from the settings on first use).
pub fn with<T>(f: impl FnOnce(&mut Qdrant) -> Result<T, Error>) -> Result<T, Error> {
    CLIENT.with(|slot| {
        let mut slot = slot.borrow_mut();
        let client = match slot.take() {
            Some(client) => client,
            None => {
                let base = settings::endpoint().ok_or_else(|| {
                    storage("no endpoint configured (endpoint = \"http://host:6333\")")
                })?;
                let timeout = settings::parsed::<u64>("timeout_ms")
                    .map_err(storage)?
                    .unwrap_or(DEFAULT_TIMEOUT_MS);
                let retrieval = Retrieval::parse(settings::setting("retrieval").as_deref())
                    .map_err(|e| storage(format!("the retrieval setting: {e}")))?;
                Qdrant {
                    base: base.trim_end_matches('/').to_owned(),
                    api_key: settings::setting("api_key").filter(|k| !k.is_empty()),
                    connect_timeout: Duration::from_millis(timeout),
                    retrieval,
                    ensured: HashSet::new(),
                    text_vectors: HashMap::new(),
                }
            }
        };
        f(slot.insert(client))
    })
}

impl Qdrant {
    /// `method path` with an optional JSON body; the answer's `result`.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Error> {
        self.send(method, path, body).and_then(|(status, answer)| {
            if (200..300).contains(&status) {
                Ok(answer.get("result").cloned().unwrap_or(Value::Null))
            } else {
                Err(self.refusal(method, path, status, &answer))
            }
        })
    }

    fn refusal(&self, method: &str, path: &str, status: u16, answer: &Value) -> Error {
        let detail = answer
            .pointer("/status/error")
            .and_then(Value::as_str)
            .unwrap_or("no detail");
        storage(format!("Qdrant refused {method} {path}: {status} {detail}"))
    }

    /// The status and JSON answer (Null when empty).
    fn send(&self, method: &str, path: &str, body: Option<Value>) -> Result<(u16, Value), Error> {
        let url = format!("{}{path}", self.base);
        let mut headers = Vec::new();
        if let Some(key) = &self.api_key {
            headers.push(("api-key", key.clone()));
        }
        let body = match body {
            Some(body) => {
                headers.push(("content-type", "application/json".to_owned()));
                Some(serde_json::to_vec(&body).map_err(storage)?)
            }
            None => None,
        };
        let response = ww_http::send(ww_http::Request {
            method,
            url: &url,
            headers,
            body,
            connect_timeout: Some(self.connect_timeout),
        })
        .map_err(|e| storage(format!("cannot reach Qdrant at {}: {e}", self.base)))?;
        let (status, bytes) = (response.status, response.body);
        let answer = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| {
                storage(format!(
                    "Qdrant's answer to {method} {path} is not JSON: {e}"
                ))
            })?
        };
        Ok((status, answer))
    }

    /// Create the collection (cosine, `dimension`; the text's sparse vector) and its
    /// session index unless it exists; an existing one of another dimension is an error.
    pub fn ensure(&mut self, collection: &str, embedder: &EmbedderId) -> Result<(), Error> {
        if self.ensured.contains(collection) {
            return Ok(());
        }
        let dimension = embedder.dimension;
        let path = format!("/collections/{collection}");
        match self.collection_info(collection)? {
            Some(info) if info.dimension != dimension => {
                return Err(storage(format!(
                    "collection {collection} has vectors of size {}, the embedder makes {dimension}",
                    info.dimension
                )));
            }
            Some(info)
                if info.embedder.as_ref().is_some_and(|e| {
                    e.model == embedder.model && e.dimension == embedder.dimension
                }) => {}
            Some(info) if info.embedder.is_none() && info.points == 0 => {
                self.set_embedder(collection, embedder)?;
            }
            Some(info) => {
                return Err(Error::Validation(ValidationError {
                    field: Some("embedder".to_owned()),
                    message: format!(
                        "collection {collection} holds vectors of {}, not of {} {}: they \
                         cannot be compared; run `ww-memory reembed` to rebuild them",
                        info.embedder
                            .as_ref()
                            .map_or("an unrecorded embedder".to_owned(), |e| e.model.clone()),
                        embedder.model,
                        embedder.dimension
                    ),
                }));
            }
            None => {
                self.call(
                    "PUT",
                    &path,
                    Some(json!({
                        "vectors": { "size": dimension, "distance": "Cosine" },
                        "sparse_vectors": { TEXT_VECTOR: { "modifier": "idf" } },
                        "metadata": { EMBEDDER_KEY: embedder_json(embedder) },
                    })),
                )?;
                self.text_vectors.insert(collection.to_owned(), true);
                self.call(
                    "PUT",
                    &format!("{path}/index?wait=true"),
                    Some(json!({ "field_name": "session", "field_schema": "keyword" })),
                )?;
            }
        }
        self.ensured.insert(collection.to_owned());
        Ok(())
    }

    /// Whether `collection` has the text's sparse vector: collections created before the
    /// adapter wrote one have none (Qdrant adds no sparse vector to an existing
    /// collection), and are searched by their dense vectors alone.
    pub fn has_text_vector(&mut self, collection: &str) -> Result<bool, Error> {
        if let Some(&known) = self.text_vectors.get(collection) {
            return Ok(known);
        }
        // Known once the collection exists; a missing one is asked about again later.
        let _ = self.collection_info(collection)?;
        Ok(self.text_vectors.get(collection).copied().unwrap_or(false))
    }

    /// The collection's size, dimension and recorded embedder (Qdrant's collection
    /// metadata, key [`EMBEDDER_KEY`]); `None` if it does not exist.
    pub fn collection_info(&mut self, collection: &str) -> Result<Option<CollectionInfo>, Error> {
        let path = format!("/collections/{collection}");
        let (status, answer) = self.send("GET", &path, None)?;
        match status {
            200 => {
                let text = answer
                    .pointer(&format!(
                        "/result/config/params/sparse_vectors/{TEXT_VECTOR}"
                    ))
                    .is_some();
                self.text_vectors.insert(collection.to_owned(), text);
                let number = |pointer: &str| answer.pointer(pointer).and_then(Value::as_u64);
                let embedder = answer
                    .pointer(&format!("/result/config/metadata/{EMBEDDER_KEY}"))
                    .and_then(|e| {
                        Some(EmbedderId {
                            model: e.get("model")?.as_str()?.to_owned(),
                            dimension: u32::try_from(e.get("dimension")?.as_u64()?).ok()?,
                        })
                    });
                Ok(Some(CollectionInfo {
                    points: number("/result/points_count").unwrap_or(0),
                    dimension: number("/result/config/params/vectors/size")
                        .and_then(|d| u32::try_from(d).ok())
                        .unwrap_or(0),
                    embedder,
                }))
            }
            404 => Ok(None),
            other => Err(self.refusal("GET", &path, other, &answer)),
        }
    }

    /// Record `embedder` in the collection's metadata.
    pub fn set_embedder(&self, collection: &str, embedder: &EmbedderId) -> Result<(), Error> {
        self.call(
            "PATCH",
            &format!("/collections/{collection}"),
            Some(json!({ "metadata": { EMBEDDER_KEY: embedder_json(embedder) } })),
        )?;
        Ok(())
    }

    /// A nearest-neighbour query: the hits, best first.
    pub fn query(&self, collection: &str, body: Value) -> Result<Value, Error> {
        let answer = self.call(
            "POST",
            &format!("/collections/{collection}/points/query"),
            Some(body),
        )?;
        answer
            .get("points")
            .cloned()
            .ok_or_else(|| storage("Qdrant's query answer has no points"))
    }

    /// Points passing the request's filter; 0 in a collection not created yet (nothing
    /// of its kind stored so far).
    pub fn count(&self, collection: &str, body: Value) -> Result<u64, Error> {
        let path = format!("/collections/{collection}/points/count");
        let (status, answer) = self.send("POST", &path, Some(body))?;
        match status {
            200..=299 => answer
                .pointer("/result/count")
                .and_then(Value::as_u64)
                .ok_or_else(|| storage("Qdrant's count answer has no count")),
            404 => Ok(0),
            other => Err(self.refusal("POST", &path, other, &answer)),
        }
    }

    /// The points with these ids that exist.
    pub fn get(
        &self,
        collection: &str,
        ids: &[String],
        with_vectors: bool,
    ) -> Result<Vec<StoredPoint>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        convert::stored(&self.retrieve(collection, ids, with_vectors)?)
    }

    /// The points with these ids that exist, with their revisions (for `change-payload`).
    pub fn revisioned(
        &self,
        collection: &str,
        ids: &[String],
    ) -> Result<Vec<convert::Revisioned>, Error> {
        convert::revisioned(&self.retrieve(collection, ids, false)?)
    }

    /// The points with these ids that exist, with their payloads, as Qdrant answers.
    fn retrieve(
        &self,
        collection: &str,
        ids: &[String],
        with_vectors: bool,
    ) -> Result<Vec<Value>, Error> {
        let points: Vec<Value> = ids.iter().map(|id| convert::point_id(id)).collect();
        let found = self.call(
            "POST",
            &format!("/collections/{collection}/points"),
            Some(json!({ "ids": points, "with_payload": true, "with_vector": with_vectors })),
        )?;
        Ok(match found {
            Value::Array(points) => points,
            _ => Vec::new(),
        })
    }

    /// One scroll request: the page's points (from `offset`, inclusive) and the offset
    /// of the next page, if any.
    fn scroll(
        &self,
        collection: &str,
        filter: &Value,
        offset: Option<Value>,
        limit: u32,
        with_vectors: bool,
    ) -> Result<(Vec<Value>, Option<Value>), Error> {
        let mut body = json!({
            "filter": filter,
            "limit": limit,
            "with_payload": true,
            "with_vector": with_vectors,
        });
        if let (Some(offset), Some(fields)) = (offset, body.as_object_mut()) {
            fields.insert("offset".into(), offset);
        }
        let page = self.call(
            "POST",
            &format!("/collections/{collection}/points/scroll"),
            Some(body),
        )?;
        let points = page
            .get("points")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let next = page
            .get("next_page_offset")
            .filter(|n| !n.is_null())
            .cloned();
        Ok((points, next))
    }

    /// One page of points passing `filter`, in id order, after `after`.
    pub fn scroll_page(
        &self,
        collection: &str,
        filter: &Value,
        after: Option<&str>,
        limit: u32,
        with_vectors: bool,
    ) -> Result<Vec<StoredPoint>, Error> {
        // Qdrant's offset is inclusive: ask for one more and drop `after` itself.
        let offset = after.map(convert::point_id);
        let extra = u32::from(after.is_some());
        let (mut points, _) = self.scroll(
            collection,
            filter,
            offset.clone(),
            limit + extra,
            with_vectors,
        )?;
        if offset.is_some() && points.first().and_then(|p| p.get("id")) == offset.as_ref() {
            points.remove(0);
        }
        points.truncate(limit as usize);
        convert::stored(&points)
    }

    /// Every point passing `filter`, page by page.
    pub fn scroll_all(
        &self,
        collection: &str,
        filter: &Value,
        mut each: impl FnMut(&[Value]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut offset = None;
        loop {
            let (points, next) = self.scroll(collection, filter, offset, SCROLL_PAGE, false)?;
            each(&points)?;
            match next {
                Some(next) => offset = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// `http://host:port: N collections`.
    pub fn describe(&mut self) -> Result<String, Error> {
        let collections = self.call("GET", "/collections", None)?;
        let n = collections
            .get("collections")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        Ok(format!("{}: {n} collections", self.base))
    }
}
