//! An OpenAI-compatible `/v1/embeddings` endpoint on loopback that answers after a set
//! delay: the remote embedder of the concurrency tests and benchmark. Vectors are
//! bag-of-words (a text's words hashed into `dimension` buckets), so texts sharing words
//! are similar and recall still finds what it should. It counts requests and the most
//! it ever had in flight at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::http::{Server, serve};

#[derive(Default)]
struct Counts {
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

/// The endpoint; stops when dropped.
pub struct EmbeddingEndpoint {
    server: Server,
    counts: Arc<Counts>,
}

fn vector(text: &str, dimension: usize) -> Vec<f32> {
    let mut vector = vec![0.0; dimension];
    for word in text.to_lowercase().split_whitespace() {
        // FNV-1a: stable across runs and platforms.
        let hash = word.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        vector[(hash % dimension as u64) as usize] += 1.0;
    }
    vector
}

fn answer(body: &[u8], dimension: usize) -> Option<Value> {
    let request: Value = serde_json::from_slice(body).ok()?;
    let inputs = request.get("input")?.as_array()?;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            json!({
                "object": "embedding",
                "index": index,
                "embedding": vector(text.as_str().unwrap_or_default(), dimension),
            })
        })
        .collect();
    Some(json!({ "object": "list", "model": request.get("model")?, "data": data }))
}

impl EmbeddingEndpoint {
    /// Serve vectors of `dimension`, each answer sent `delay` after its request arrived.
    pub async fn start(dimension: usize, delay: Duration) -> Self {
        let counts = Arc::new(Counts::default());
        let shared = counts.clone();
        let server = serve(move |path: String, body: Bytes| {
            let counts = shared.clone();
            async move {
                counts.requests.fetch_add(1, Ordering::Relaxed);
                let now = counts.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                counts.most_in_flight.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                counts.in_flight.fetch_sub(1, Ordering::SeqCst);
                match (path == "/v1/embeddings")
                    .then(|| answer(&body, dimension))
                    .flatten()
                {
                    Some(answer) => (200, "application/json", Bytes::from(answer.to_string())),
                    None => (
                        400,
                        "application/json",
                        Bytes::from_static(b"{\"error\":{\"message\":\"bad request\"}}"),
                    ),
                }
            }
        })
        .await;
        Self { server, counts }
    }

    /// Its base URL (the embedder's `endpoint`).
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.counts.requests.load(Ordering::SeqCst)
    }

    /// The most requests it had in flight at once.
    pub fn most_in_flight(&self) -> usize {
        self.counts.most_in_flight.load(Ordering::SeqCst)
    }

    /// The embedder role on this endpoint (vectors of `dimension`, as served), in a
    /// configuration file's words.
    pub fn role(&self, dimension: usize) -> String {
        format!(
            "[roles.embedder]\ncomponent = \"embedder_openai.wasm\"\nname = \"openai\"\n\
             endpoint = \"{}\"\nsettings = {{ model = \"test-embed\", dimension = {dimension} }}\n",
            self.url()
        )
    }

    /// A configuration over the built components with this endpoint as the embedder,
    /// the embedded store in `data_dir`.
    pub fn config(
        &self,
        data_dir: &std::path::Path,
        dimension: usize,
    ) -> ww_host::config::FileConfig {
        crate::tests_config(&self.role(dimension), data_dir)
    }
}
