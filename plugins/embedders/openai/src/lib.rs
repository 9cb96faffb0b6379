//! An embedder over an OpenAI-compatible embeddings API: `POST {endpoint}/v1/embeddings`
//! with `{"model", "input": [...]}`, answered by `{"data": [{"index", "embedding"}]}`.
//! Ollama, Text Embeddings Inference, vLLM and OpenAI all serve it.
//!
//! Settings (`[roles.embedder]`): `endpoint` (the base URL, e.g. `http://127.0.0.1:11434`
//! for Ollama), `model`, `dimension` (what the stores are sized for; a model that returns
//! another length is an error that says so), optional `batch_size` (default 64) and the
//! secret `api_key` (sent as a bearer token). Vectors are L2-normalised here, whatever
//! the server does, so cosine similarity is a dot product everywhere.

use serde::Deserialize;
use ww_guest::embedder::{Error, Guest, ValidationError};
use ww_guest::{add_span_attribute, settings, traced};

/// Texts per call, at most (as the hash embedder).
const MAX_TEXTS: usize = 1024;
/// Texts per request unless `batch_size` says otherwise.
const DEFAULT_BATCH: usize = 64;

struct Config {
    url: String,
    model: String,
    dimension: u32,
    batch_size: usize,
    api_key: Option<String>,
}

fn config() -> Result<Config, Error> {
    let missing = |what: &str| Error::Embedding(format!("the embedder has no `{what}` setting"));
    let endpoint = settings::endpoint().ok_or_else(|| missing("endpoint"))?;
    let dimension = settings::parsed::<u32>("dimension")
        .map_err(Error::Embedding)?
        .filter(|d| *d > 0)
        .ok_or_else(|| missing("dimension"))?;
    let batch_size = settings::parsed::<usize>("batch_size")
        .map_err(Error::Embedding)?
        .unwrap_or(DEFAULT_BATCH)
        .clamp(1, MAX_TEXTS);
    Ok(Config {
        url: format!("{}/v1/embeddings", endpoint.trim_end_matches('/')),
        model: settings::setting("model").ok_or_else(|| missing("model"))?,
        dimension,
        batch_size,
        api_key: settings::setting("api_key").filter(|k| !k.is_empty()),
    })
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    index: usize,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorDetail {
    Object { message: String },
    Text(String),
}

fn normalised(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

/// One request for `texts` (all non-empty), vectors in their order.
fn request(config: &Config, texts: &[&str]) -> Result<Vec<Vec<f32>>, Error> {
    let body = serde_json::json!({ "model": config.model, "input": texts });
    let body = serde_json::to_vec(&body).map_err(|e| Error::Embedding(e.to_string()))?;
    let mut headers = vec![("content-type", "application/json".to_owned())];
    if let Some(key) = &config.api_key {
        headers.push(("authorization", format!("Bearer {key}")));
    }
    let response = ww_http::send(ww_http::Request {
        method: "POST",
        url: &config.url,
        headers,
        body: Some(body),
        connect_timeout: Some(std::time::Duration::from_secs(3)),
    })
    .map_err(|e| Error::Embedding(format!("{}: {e}", config.url)))?;
    let (status, bytes) = (response.status, response.body);
    if !(200..300).contains(&status) {
        let detail = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(ErrorBody {
                error: ErrorDetail::Object { message } | ErrorDetail::Text(message),
            }) => message,
            Err(_) => String::from_utf8_lossy(bytes.get(..200).unwrap_or(&bytes)).into_owned(),
        };
        return Err(Error::Embedding(format!(
            "{} answered {status}: {detail}",
            config.url
        )));
    }
    let parsed: Response = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Embedding(format!("{}: not an embeddings answer: {e}", config.url)))?;
    let mut vectors: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
    for item in parsed.data {
        if item.embedding.len() != config.dimension as usize {
            return Err(Error::Embedding(format!(
                "model {} returned vectors of dimension {}, but the configured dimension is {} \
                 (set `dimension = {}` for this model, with stores sized for it)",
                config.model,
                item.embedding.len(),
                config.dimension,
                item.embedding.len()
            )));
        }
        if let Some(slot) = vectors.get_mut(item.index) {
            *slot = Some(normalised(item.embedding));
        }
    }
    vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            v.ok_or_else(|| Error::Embedding(format!("the answer has no vector for input {i}")))
        })
        .collect()
}

struct OpenAiEmbedder;

impl Guest for OpenAiEmbedder {
    fn dimension() -> u32 {
        // The host checks the configuration at start; a missing setting shows on `embed`.
        config().map_or(0, |c| c.dimension)
    }

    fn model() -> String {
        settings::setting("model").unwrap_or_else(|| "unconfigured".to_owned())
    }

    #[traced("openai.embed")]
    fn embed(texts: Vec<String>) -> Result<Vec<Vec<f32>>, Error> {
        if texts.len() > MAX_TEXTS {
            return Err(Error::Validation(ValidationError {
                field: Some("texts".to_owned()),
                message: format!("at most {MAX_TEXTS} texts per call"),
            }));
        }
        let config = config()?;
        add_span_attribute("gen_ai.request.model", config.model.clone());
        add_span_attribute("embedder.texts", texts.len());
        add_span_attribute("embedder.dimension", config.dimension);
        // An empty text is a zero vector by the interface's contract (and many servers
        // refuse it): only the others are sent.
        let wanted: Vec<(usize, &str)> = texts
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.trim().is_empty())
            .map(|(i, t)| (i, t.as_str()))
            .collect();
        let mut vectors = vec![vec![0.0; config.dimension as usize]; texts.len()];
        let mut requests = 0;
        for batch in wanted.chunks(config.batch_size) {
            let inputs: Vec<&str> = batch.iter().map(|(_, t)| *t).collect();
            for ((i, _), vector) in batch.iter().zip(request(&config, &inputs)?) {
                if let Some(slot) = vectors.get_mut(*i) {
                    *slot = vector;
                }
            }
            requests += 1;
        }
        add_span_attribute("embedder.requests", requests);
        Ok(vectors)
    }
}

ww_guest::export_embedder!(OpenAiEmbedder);
