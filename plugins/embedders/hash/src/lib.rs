//! The default embedder: feature hashing into 384 signed buckets, L2-normalised.
//!
//! Deterministic, offline, no model. A text's features are its words, their crude stems,
//! adjacent word pairs, and the character trigrams of each word; each feature is hashed
//! (FNV-1a) to a bucket and a sign. Texts that share words, stems or character n-grams
//! therefore share buckets and score clearly higher than unrelated texts; the sign keeps
//! collisions from adding up. Common function words are skipped so that "the" and "of"
//! do not make unrelated texts look alike.

use ww_guest::embedder::{Error, Guest, ValidationError};
use ww_guest::traced;

/// Vector length (the size of common small sentence models, so stores are sized alike).
const DIMENSION: usize = 384;
/// The version of the feature scheme; a change here changes every vector.
const MODEL: &str = "hash-v1";
/// Texts per call, at most: a bound on one call's work and memory.
const MAX_TEXTS: usize = 1024;

/// Feature weights: stems carry meaning across inflections (a whole-word match gets both
/// its word and its stem), then word order and spelling.
const WORD_WEIGHT: f32 = 0.5;
const STEM_WEIGHT: f32 = 1.0;
const BIGRAM_WEIGHT: f32 = 0.4;
const TRIGRAM_WEIGHT: f32 = 0.3;

const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in", "is",
    "it", "its", "of", "on", "or", "that", "the", "this", "to", "was", "were", "will", "with",
];

/// 64-bit FNV-1a over a feature kind tag and its bytes.
fn fnv1a(tag: u8, parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in std::iter::once(&tag).chain(parts.iter().flat_map(|p| p.iter())) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn add(vector: &mut [f32], hash: u64, weight: f32) {
    let bucket = (hash % DIMENSION as u64) as usize;
    let sign = if hash >> 63 == 0 { 1.0 } else { -1.0 };
    if let Some(value) = vector.get_mut(bucket) {
        *value += sign * weight;
    }
}

/// A crude stem: common English suffixes off, a doubled final consonant undoubled
/// ("sitting" → "sit", "indexes" → "index", "databases" → "database").
fn stem(word: &str) -> &str {
    const SUFFIXES: &[&str] = &[
        "ations", "ation", "ings", "ing", "ies", "ied", "ed", "ly", "er", "es", "s",
    ];
    for suffix in SUFFIXES {
        if let Some(base) = word.strip_suffix(suffix) {
            if base.chars().count() < 3 {
                continue;
            }
            // "es" only after a sibilant (boxes, indexes); otherwise strip just "s".
            if *suffix == "es"
                && !["s", "x", "z", "ch", "sh"]
                    .iter()
                    .any(|s| base.ends_with(s))
            {
                continue;
            }
            if let [.., before, last] = base.as_bytes()
                && before == last
                && !b"aeiouls".contains(last)
            {
                return base.get(..base.len() - 1).unwrap_or(base);
            }
            return base;
        }
    }
    word
}

/// The embedding of one text; the zero vector when it has no features.
fn embed_one(text: &str) -> Vec<f32> {
    let mut vector = vec![0.0_f32; DIMENSION];
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !STOP_WORDS.contains(w))
        .collect();
    for word in &words {
        add(&mut vector, fnv1a(b'w', &[word.as_bytes()]), WORD_WEIGHT);
        let stemmed = stem(word);
        add(&mut vector, fnv1a(b's', &[stemmed.as_bytes()]), STEM_WEIGHT);
        let padded: Vec<char> = std::iter::once('#')
            .chain(word.chars())
            .chain(std::iter::once('#'))
            .collect();
        for trigram in padded.windows(3) {
            let trigram: String = trigram.iter().collect();
            add(
                &mut vector,
                fnv1a(b't', &[trigram.as_bytes()]),
                TRIGRAM_WEIGHT,
            );
        }
    }
    for (first, second) in words.iter().zip(words.iter().skip(1)) {
        add(
            &mut vector,
            fnv1a(b'b', &[first.as_bytes(), b" ", second.as_bytes()]),
            BIGRAM_WEIGHT,
        );
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

struct HashEmbedder;

impl Guest for HashEmbedder {
    fn dimension() -> u32 {
        DIMENSION as u32
    }

    fn model() -> String {
        MODEL.to_owned()
    }

    #[traced("hash.embed")]
    fn embed(texts: Vec<String>) -> Result<Vec<Vec<f32>>, Error> {
        if texts.len() > MAX_TEXTS {
            return Err(Error::Validation(ValidationError {
                field: Some("texts".to_owned()),
                message: format!("at most {MAX_TEXTS} texts per call, got {}", texts.len()),
            }));
        }
        ww_guest::add_span_attribute("embedder.texts", texts.len());
        ww_guest::add_span_attribute("embedder.dimension", DIMENSION);
        Ok(texts.iter().map(|t| embed_one(t)).collect())
    }
}

ww_guest::export_embedder!(HashEmbedder);
