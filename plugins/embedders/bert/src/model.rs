//! A sentence-transformers model directory, loaded and run: the BERT encoder (candle),
//! its tokenizer (`tokenizer.json`), its pooling (`1_Pooling/config.json`) and its
//! sequence limit (`sentence_bert_config.json`), then L2 normalisation.

use std::path::Path;

use candle_core::{D, DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationParams};

/// Token positions one forward pass handles at most (batch × padded length): bounds the
/// attention scores' memory (heads × positions × length × 4 bytes: 25 MB at 256 tokens)
/// while keeping the matrix products large enough to be efficient.
const POSITIONS_PER_PASS: usize = 2048;

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

/// One text, tokenized.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// Token ids, with the model's special tokens.
    pub ids: Vec<u32>,
    /// Whether tokens past the model's limit were dropped.
    pub truncated: bool,
}

/// A loaded sentence-embedding model.
pub struct SentenceModel {
    bert: BertModel,
    tokenizer: Tokenizer,
    pooling: Pooling,
    max_tokens: usize,
    dimension: usize,
    pad_id: u32,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not valid: {e}", path.display()))
}

impl SentenceModel {
    /// Load the model in `dir` (`config.json`, `model.safetensors`, `tokenizer.json`,
    /// optionally `1_Pooling/config.json` and `sentence_bert_config.json`).
    pub fn load(dir: &Path) -> Result<Self, String> {
        let config: Config = read_json(&dir.join("config.json"))?;
        let pooling = match read_json::<PoolingConfig>(&dir.join("1_Pooling/config.json")) {
            Ok(p) if p.pooling_mode_cls_token => Pooling::Cls,
            _ => Pooling::Mean,
        };
        // sentence-transformers truncates at max_seq_length (256 for all-MiniLM-L6-v2);
        // the position table bounds it in any case.
        let max_tokens = read_json::<SentenceConfig>(&dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|c| c.max_seq_length)
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);
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
        let pad_id = tokenizer
            .token_to_id("[PAD]")
            .unwrap_or(config.pad_token_id as u32);
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| format!("cannot read model.safetensors: {e}"))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| format!("model.safetensors is not valid: {e}"))?;
        let bert = BertModel::load(vb, &config)
            .map_err(|e| format!("the weights do not fit config.json: {e}"))?;
        Ok(Self {
            bert,
            tokenizer,
            pooling,
            max_tokens,
            dimension: config.hidden_size,
            pad_id,
        })
    }

    /// The length of every vector.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Tokens per text, at most (special tokens included).
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
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
    pub fn batch_capacity(longest: usize) -> usize {
        (POSITIONS_PER_PASS / longest.max(1)).max(1)
    }

    /// One normalised vector per token sequence, in one forward pass: sequences are
    /// padded to the longest, and padding is masked out of attention and pooling.
    pub fn embed(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, String> {
        self.forward(batch)
            .map_err(|e| format!("inference failed: {e}"))
    }

    fn forward(&self, batch: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let device = Device::Cpu;
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
        let ids = Tensor::from_vec(ids, (rows, length), &device)?;
        let mask = Tensor::from_vec(mask, (rows, length), &device)?;
        let token_types = ids.zeros_like()?;
        let hidden = self.bert.forward(&ids, &token_types, Some(&mask))?;
        let pooled = match self.pooling {
            Pooling::Cls => hidden.i((.., 0))?,
            Pooling::Mean => {
                let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
                summed.broadcast_div(&mask.sum(1)?)?
            }
        };
        let norms = pooled.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
        let normalised = pooled.broadcast_div(&norms.clamp(1e-12, f32::MAX)?)?;
        normalised.to_vec2::<f32>()
    }
}
