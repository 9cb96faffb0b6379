//! A sentence-transformers model directory, loaded and run: its tokenizer
//! (`tokenizer.json`), its pooling (`1_Pooling/config.json`) and sequence limit
//! (`sentence_bert_config.json`), and its encoder, run one of two ways:
//! - by the host, natively, through `wasi:nn` (`model.onnx`, which the host loads from the
//!   same directory and offers by name), when the host offers it;
//! - else inside this component with candle (`model.safetensors`; BERT-family models only).
//!
//! Pooling and L2 normalisation happen here either way, so both paths give the same vectors
//! (to float rounding: `host/tests/inference.rs` compares them).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationParams};
use ww_guest::nn;

/// Token positions one forward pass handles at most (batch × padded length) inside the
/// component: bounds the attention scores' memory (heads × positions × length × 4 bytes:
/// 25 MB at 256 tokens) while keeping the matrix products large enough to be efficient.
const POSITIONS_PER_PASS: usize = 2048;

/// The same through the host. Smaller, by measurement: ONNX Runtime on one thread embeds
/// 64 LoCoMo turns (2,473 tokens, the longest 95) in 0.74 s in passes of about 256-512
/// positions, 0.85 s in passes of 1,024, 1.15 s in passes of 2,048 and 2.2 s in one pass
/// (docs/benchmarks.md): past a few hundred positions a pass gains nothing from its
/// size and pays for the attention over its padding.
const HOST_POSITIONS_PER_PASS: usize = 512;

/// The graph's name in the host (`wasi:nn/graph.load-by-name`).
const GRAPH_NAME: &str = "model";

/// How a text's token vectors become one vector (sentence-transformers' pooling modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over the text's tokens (all-MiniLM-L6-v2, most sentence models).
    Mean,
    /// The `[CLS]` token's vector (the BGE models).
    Cls,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
}

#[derive(Deserialize)]
struct SentenceConfig {
    max_seq_length: Option<usize>,
}

/// What both paths need of `config.json` (candle's own `Config` wants BERT's fields).
#[derive(Deserialize)]
struct ModelShape {
    hidden_size: usize,
    max_position_embeddings: usize,
    #[serde(default)]
    pad_token_id: u32,
    #[serde(default)]
    model_type: Option<String>,
}

/// One text, tokenized.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// Token ids, with the model's special tokens.
    pub ids: Vec<u32>,
    /// Whether tokens past the model's limit were dropped.
    pub truncated: bool,
}

/// Where the encoder runs.
enum Encoder {
    /// The host runs the graph (ONNX Runtime, through wasi:nn).
    Host(nn::Graph),
    /// candle, in this component.
    Component(Box<BertModel>),
}

/// A loaded sentence-embedding model.
pub struct SentenceModel {
    encoder: Encoder,
    tokenizer: Tokenizer,
    pooling: Pooling,
    max_tokens: usize,
    dimension: usize,
    pad_id: u32,
    /// Why the model runs in the component, when it does.
    fallback: Option<String>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not valid: {e}", path.display()))
}

impl SentenceModel {
    /// Load the model in `dir` (`config.json`, `tokenizer.json`, optionally
    /// `1_Pooling/config.json` and `sentence_bert_config.json`), with the host's graph
    /// when it offers one, else `model.safetensors` run here.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let shape: ModelShape = read_json(&dir.join("config.json"))?;
        let pooling = match read_json::<PoolingConfig>(&dir.join("1_Pooling/config.json")) {
            Ok(p) if p.pooling_mode_cls_token => Pooling::Cls,
            _ => Pooling::Mean,
        };
        // sentence-transformers truncates at max_seq_length (256 for all-MiniLM-L6-v2);
        // the position table bounds it in any case (MPNet's keeps two rows for padding).
        let positions = match shape.model_type.as_deref() {
            Some("mpnet") => shape.max_position_embeddings.saturating_sub(2),
            _ => shape.max_position_embeddings,
        };
        let max_tokens = read_json::<SentenceConfig>(&dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|c| c.max_seq_length)
            .unwrap_or(positions)
            .min(positions);
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| format!("cannot load tokenizer.json: {e}"))?;
        // Padding is done per batch below (to the longest text of the batch, not to a
        // fixed length); truncation at the model's limit.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..TruncationParams::default()
            }))
            .map_err(|e| format!("cannot set the tokenizer's truncation: {e}"))?;
        let pad_id = ["[PAD]", "<pad>"]
            .iter()
            .find_map(|token| tokenizer.token_to_id(token))
            .unwrap_or(shape.pad_token_id);
        let (encoder, fallback) = match nn::Graph::load(GRAPH_NAME) {
            Ok(graph) => (Encoder::Host(graph), None),
            Err(reason) => {
                let bert = Self::load_here(dir, shape.model_type.as_deref())?;
                (Encoder::Component(Box::new(bert)), Some(reason))
            }
        };
        Ok(Self {
            encoder,
            tokenizer,
            pooling,
            max_tokens,
            dimension: shape.hidden_size,
            pad_id,
            fallback,
        })
    }

    /// The encoder run here: candle's BERT from `model.safetensors`.
    fn load_here(dir: &Path, model_type: Option<&str>) -> Result<BertModel, String> {
        if let Some(other) = model_type.filter(|t| *t != "bert") {
            return Err(format!(
                "a {other} model runs only through the host's inference (wasi:nn with \
                 ONNX Runtime, and model.onnx in the model directory), which offered none"
            ));
        }
        let config: Config = read_json(&dir.join("config.json"))?;
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| format!("cannot read model.safetensors: {e}"))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| format!("model.safetensors is not valid: {e}"))?;
        BertModel::load(vb, &config).map_err(|e| format!("the weights do not fit config.json: {e}"))
    }

    /// The length of every vector.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Tokens per text, at most (special tokens included).
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Where the encoder runs: `wasi-nn onnx` (the host) or `in-component candle`.
    pub fn backend(&self) -> &'static str {
        match self.encoder {
            Encoder::Host(_) => "wasi-nn onnx",
            Encoder::Component(_) => "in-component candle",
        }
    }

    /// Why the model runs in the component (the host offered no graph), when it does.
    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// `text` as the model's token ids, cut at its limit.
    pub fn tokenize(&self, text: &str) -> Result<Tokens, String> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| format!("cannot tokenize: {e}"))?;
        Ok(Tokens {
            ids: encoding.get_ids().to_vec(),
            truncated: !encoding.get_overflowing().is_empty(),
        })
    }

    /// How many texts of `longest` tokens one forward pass takes.
    pub fn batch_capacity(&self, longest: usize) -> usize {
        let positions = match self.encoder {
            Encoder::Host(_) => HOST_POSITIONS_PER_PASS,
            Encoder::Component(_) => POSITIONS_PER_PASS,
        };
        (positions / longest.max(1)).max(1)
    }

    /// One normalised vector per token sequence, in one forward pass: sequences are
    /// padded to the longest, and padding is masked out of attention and pooling.
    pub fn embed(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, String> {
        let rows = batch.len();
        let length = batch.iter().map(|ids| ids.len()).max().unwrap_or(0);
        if rows == 0 || length == 0 {
            return Ok(vec![vec![0.0; self.dimension]; rows]);
        }
        let mut ids = Vec::with_capacity(rows * length);
        let mut mask = Vec::with_capacity(rows * length);
        for sequence in batch {
            ids.extend_from_slice(sequence);
            ids.extend(std::iter::repeat_n(self.pad_id, length - sequence.len()));
            mask.extend(std::iter::repeat_n(1u32, sequence.len()));
            mask.extend(std::iter::repeat_n(0u32, length - sequence.len()));
        }
        let hidden = match &self.encoder {
            Encoder::Host(graph) => self.forward_host(graph, &ids, &mask, rows, length)?,
            Encoder::Component(bert) => Self::forward_here(bert, ids, &mask, rows, length)
                .map_err(|e| format!("inference failed: {e}"))?,
        };
        Ok(self.pool(&hidden, &mask, rows, length))
    }

    /// The last hidden state, `rows × length × dimension`, from the host's graph.
    fn forward_host(
        &self,
        graph: &nn::Graph,
        ids: &[u32],
        mask: &[u32],
        rows: usize,
        length: usize,
    ) -> Result<Vec<f32>, String> {
        let dims = [rows as u32, length as u32];
        let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
        let mask: Vec<i64> = mask.iter().map(|&m| i64::from(m)).collect();
        let outputs = graph
            .compute(&[
                ("input_ids", &nn::Tensor::i64(&dims, &ids)),
                ("attention_mask", &nn::Tensor::i64(&dims, &mask)),
            ])
            .map_err(|e| format!("inference failed in the host: {e}"))?;
        let (shape, hidden) = outputs.f32("last_hidden_state")?;
        if shape != [rows as u32, length as u32, self.dimension as u32] {
            return Err(format!(
                "the graph's output is {shape:?}; expected [{rows}, {length}, {}]",
                self.dimension
            ));
        }
        Ok(hidden)
    }

    /// The last hidden state from candle's BERT, run here.
    fn forward_here(
        bert: &BertModel,
        ids: Vec<u32>,
        mask: &[u32],
        rows: usize,
        length: usize,
    ) -> candle_core::Result<Vec<f32>> {
        let device = Device::Cpu;
        let ids = Tensor::from_vec(ids, (rows, length), &device)?;
        let mask = Tensor::from_slice(mask, (rows, length), &device)?;
        let token_types = ids.zeros_like()?;
        bert.forward(&ids, &token_types, Some(&mask))?
            .flatten_all()?
            .to_vec1::<f32>()
    }

    /// Pool each row's token vectors (mean over its real tokens, or its first) and
    /// normalise to unit length.
    fn pool(&self, hidden: &[f32], mask: &[u32], rows: usize, length: usize) -> Vec<Vec<f32>> {
        let dimension = self.dimension;
        (0..rows)
            .map(|row| {
                let mut pooled = vec![0.0_f32; dimension];
                let tokens = hidden
                    .chunks_exact(dimension)
                    .skip(row * length)
                    .take(length)
                    .zip(mask.iter().skip(row * length));
                let mut counted = 0_u32;
                for (token, &keep) in tokens {
                    if keep == 0 {
                        continue;
                    }
                    pooled.iter_mut().zip(token).for_each(|(p, &x)| *p += x);
                    counted += 1;
                    if self.pooling == Pooling::Cls {
                        break;
                    }
                }
                let scale = 1.0 / counted.max(1) as f32;
                pooled.iter_mut().for_each(|p| *p *= scale);
                let norm = pooled.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                pooled.iter_mut().for_each(|p| *p /= norm);
                pooled
            })
            .collect()
    }
}
