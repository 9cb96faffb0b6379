//! The default embedder: a sentence-embedding model (all-MiniLM-L6-v2 by default;
//! all-mpnet-base-v2 or any BERT-family sentence-transformers model directory).
//!
//! The host grants the component one directory, read-only, seen as `/model`; nothing
//! else (no network, no other files). The model is loaded on the instance's first call,
//! in a `bert.load` span. Its forward pass runs in the host, natively, when the host
//! offers the directory's `model.onnx` through `wasi:nn`; else here, with candle (and the
//! load span says why). A call's texts are tokenized, cut at the model's limit (a cut is
//! counted on the span, `ww.embedder.truncated`), sorted by length and run in as few
//! forward passes as fit [`model::SentenceModel::batch_capacity`], each a `bert.forward`
//! span (the backend, the thread count, the pass's texts and tokens), so short texts are
//! not padded to long ones.

mod model;

use std::path::Path;
use std::sync::OnceLock;

use model::{SentenceModel, Tokens};
use ww_guest::embedder::{Error, Guest};
use ww_guest::{add_span_attribute, settings, span, traced};

/// Where the host mounts the model directory.
const MODEL_DIR: &str = "/model";
/// Texts per call, at most.
const MAX_TEXTS: usize = 1024;
/// Tokens per call, at most (after truncation), with the model run here: inference costs
/// about 3 ms a token in the component (docs/recall.md), so this is about 6 s, inside the
/// default 10 s call deadline: a call too large is refused with a message, not cut off by
/// a trap.
const MAX_TOKENS_PER_CALL: usize = 2048;
/// The same with the host running the graph: about 0.27 ms a token for MiniLM on one
/// thread (docs/benchmarks.md), six to seven times that for mpnet, so 8,192 tokens take
/// about 2 s and 15 s. The call deadline (10 s by default) cannot interrupt a native pass:
/// this bound is what keeps one call from holding a core for long. The services send
/// far smaller calls (a batch of episodes goes in calls of about 1,800 tokens).
const MAX_TOKENS_PER_CALL_HOST: usize = 8192;
/// A text is cut to this many bytes (at a character boundary) before tokenizing: far
/// more than the model's 256 tokens ever come from, and it keeps a 1 MB text from
/// costing the tokenizer a megabyte of work that truncation then throws away.
const MAX_TEXT_BYTES: usize = 16 * 1024;

static MODEL: OnceLock<Result<SentenceModel, String>> = OnceLock::new();

/// The model, loaded on first use.
fn model() -> Result<&'static SentenceModel, Error> {
    MODEL
        .get_or_init(|| {
            let load = span("bert.load").attr("ww.embedder.model", model_name());
            let loaded = SentenceModel::load(Path::new(MODEL_DIR));
            match &loaded {
                Ok(model) => {
                    load.set_attribute("ww.embedder.dimension", model.dimension());
                    load.set_attribute("ww.embedder.max_tokens", model.max_tokens());
                    load.set_attribute("ww.inference.backend", model.backend());
                    if let Some(reason) = model.fallback() {
                        load.set_attribute("ww.inference.fallback_reason", reason.to_owned());
                    }
                }
                Err(message) => {
                    // Said on stderr too: the host's start-up check only sees "no vectors".
                    eprintln!("model embedder: cannot load the model in {MODEL_DIR}: {message}");
                    load.record_error("model_load", message.clone());
                }
            }
            loaded
        })
        .as_ref()
        .map_err(|message| Error::Embedding(format!("the model cannot be loaded: {message}")))
}

/// The model's name: the `model` setting (the config file names it), else its shape.
fn model_name() -> String {
    settings::setting("model").unwrap_or_else(|| "bert".to_owned())
}

/// `text` cut to at most `max` bytes at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

struct BertEmbedder;

impl Guest for BertEmbedder {
    fn dimension() -> u32 {
        // A model that cannot load has no dimension; its embed calls say why.
        model().map_or(0, |m| m.dimension() as u32)
    }

    fn model() -> String {
        model_name()
    }

    #[traced("bert.embed")]
    fn embed(texts: Vec<String>) -> Result<Vec<Vec<f32>>, Error> {
        if texts.len() > MAX_TEXTS {
            return Err(Error::Embedding(format!(
                "at most {MAX_TEXTS} texts per call, got {}",
                texts.len()
            )));
        }
        let model = model()?;
        add_span_attribute("gen_ai.request.model", model_name());
        add_span_attribute("ww.embedder.batch_size", texts.len());
        add_span_attribute("ww.embedder.dimension", model.dimension());

        let tokenized = {
            let _tokenize = span("bert.tokenize").attr("ww.embedder.texts", texts.len());
            texts
                .iter()
                .map(|text| {
                    if text.trim().is_empty() {
                        // An empty text gives the zero vector (the interface's rule).
                        return Ok(None);
                    }
                    let input = cut(text, MAX_TEXT_BYTES);
                    let mut tokens = model.tokenize(input).map_err(Error::Embedding)?;
                    tokens.truncated |= input.len() < text.len();
                    Ok(Some(tokens))
                })
                .collect::<Result<Vec<Option<Tokens>>, Error>>()?
        };
        let total: usize = tokenized.iter().flatten().map(|t| t.ids.len()).sum();
        let truncated = tokenized.iter().flatten().filter(|t| t.truncated).count();
        add_span_attribute("gen_ai.usage.input_tokens", total);
        add_span_attribute("ww.embedder.truncated", truncated);
        add_span_attribute("ww.inference.backend", model.backend());
        let (limit, threads) = match model.fallback() {
            None => (
                MAX_TOKENS_PER_CALL_HOST,
                settings::setting("inference.threads")
                    .and_then(|t| t.parse::<i64>().ok())
                    .unwrap_or(0),
            ),
            // A component runs on one thread.
            Some(_) => (MAX_TOKENS_PER_CALL, 1),
        };
        if total > limit {
            return Err(Error::Embedding(format!(
                "{total} tokens in one call; at most {limit}: send fewer texts per call"
            )));
        }

        // Longest first, so each pass pads its texts to a length close to their own.
        let length = |i: usize| {
            tokenized
                .get(i)
                .and_then(Option::as_ref)
                .map(|t| t.ids.len())
        };
        let mut order: Vec<usize> = (0..texts.len()).filter(|&i| length(i).is_some()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(length(i).unwrap_or(0)));
        let mut vectors = vec![vec![0.0_f32; model.dimension()]; texts.len()];
        let mut passes = 0_usize;
        let mut start = 0;
        while let Some(&first) = order.get(start) {
            let longest = length(first).unwrap_or(1);
            let end = (start + model.batch_capacity(longest)).min(order.len());
            let members = order.get(start..end).unwrap_or_default();
            let batch: Vec<&[u32]> = members
                .iter()
                .filter_map(|&i| tokenized.get(i)?.as_ref().map(|t| t.ids.as_slice()))
                .collect();
            let pass = span("bert.forward")
                .attr("ww.inference.backend", model.backend())
                .attr("ww.inference.threads", threads)
                .attr("ww.embedder.batch_size", batch.len())
                .attr("ww.embedder.sequence_length", longest)
                .attr(
                    "gen_ai.usage.input_tokens",
                    batch.iter().map(|ids| ids.len()).sum::<usize>(),
                );
            let embedded = model.embed(&batch).map_err(|message| {
                pass.record_error("inference", message.clone());
                Error::Embedding(message)
            })?;
            drop(pass);
            for (&i, vector) in members.iter().zip(embedded) {
                if let Some(slot) = vectors.get_mut(i) {
                    *slot = vector;
                }
            }
            passes += 1;
            start = end;
        }
        add_span_attribute("ww.embedder.passes", passes);
        Ok(vectors)
    }
}

ww_guest::export_embedder!(BertEmbedder);
