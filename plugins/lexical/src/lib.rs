//! Text as the lexical side of retrieval reads it, shared by the stores so that the
//! embedded store's inverted index and the Qdrant adapter's sparse vectors agree on what
//! a word is.
//!
//! Tokens: lower-cased runs of letters and digits; a number keeps its decimal point or
//! separators (`3.5`, `10:30`, `2023-05-08` are one token each, so a date or a version
//! matches as written); an English possessive or plural `s` is dropped from words of four
//! letters or more (`Caroline's` → `caroline`, `tests` → `test`), so names and their
//! inflections meet.
//!
//! Written here rather than taken from a tokenizer crate: what is wanted is a few rules
//! about numbers and names, not a language pipeline (stemmers, stop lists) whose
//! choices would have to be measured again against the recall benchmark.

/// BM25's term-frequency saturation.
pub const K1: f32 = 1.2;
/// BM25's length normalisation.
pub const B: f32 = 0.75;
/// Distinct terms of one text that are indexed, at most (a bound on one point's cost).
pub const MAX_TERMS_PER_TEXT: usize = 4096;
/// The length, in tokens, a text's length is normalised against where the collection's
/// own average is not known (sparse vectors are weighted before the engine sees the
/// collection): about one remembered turn of a conversation.
pub const TYPICAL_LENGTH: f32 = 24.0;

/// The tokens of `text`, as indexed and as queried.
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_alphanumeric() {
            current.extend(c.to_lowercase());
            continue;
        }
        // A separator between two digits stays inside a number.
        let between_digits = matches!(c, '.' | ',' | ':' | '-' | '/')
            && i.checked_sub(1)
                .and_then(|p| chars.get(p))
                .is_some_and(|p| p.is_ascii_digit())
            && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
        if between_digits && !current.is_empty() {
            current.push(c);
            continue;
        }
        // `'s` ends a word: the possessive goes.
        if (c == '\'' || c == '’')
            && chars.get(i + 1).is_some_and(|n| *n == 's' || *n == 'S')
            && !chars.get(i + 2).is_some_and(|n| n.is_alphanumeric())
        {
            finish(&mut current, &mut out);
            continue;
        }
        finish(&mut current, &mut out);
    }
    finish(&mut current, &mut out);
    out
}

fn finish(current: &mut String, out: &mut Vec<String>) {
    if current.is_empty() {
        return;
    }
    let mut word = std::mem::take(current);
    if word.len() >= 4
        && word.ends_with('s')
        && !word.ends_with("ss")
        && !word.ends_with("us")
        && !word.ends_with("is")
        && !word.chars().any(|c| c.is_ascii_digit())
    {
        word.pop();
    }
    // A lone possessive `s` left by a tokenised apostrophe carries nothing.
    if word != "s" {
        out.push(word);
    }
}

/// A sparse vector: term ids (ascending, distinct) and their weights.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sparse {
    /// Term ids, ascending and distinct.
    pub indices: Vec<u32>,
    /// Each term's weight, in the order of `indices`.
    pub values: Vec<f32>,
}

impl Sparse {
    /// Whether it has no term.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// A term's id in a sparse vector: the 32-bit FNV-1a hash of its token. A hash, not a
/// vocabulary, because the vocabulary would be state shared by every writer of a
/// collection; two tokens meeting on one id (about one pair in 10,000 among 1,000
/// distinct words) only blur those two words' weights.
pub fn term_id(token: &str) -> u32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    token.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(PRIME)
    })
}

/// `text` as a document: each term weighted by BM25's saturated, length-normalised term
/// frequency (against [`TYPICAL_LENGTH`]). The engine multiplies in the IDF it keeps over
/// the collection (Qdrant's `idf` modifier), so a query's score is BM25.
pub fn document(text: &str) -> Sparse {
    let tokens = tokens(text);
    let length = tokens.len() as f32;
    let mut counts: Vec<(u32, u32)> = Vec::new();
    let mut ids: Vec<u32> = tokens.iter().map(|t| term_id(t)).collect();
    ids.sort_unstable();
    for id in ids {
        let full = counts.len() >= MAX_TERMS_PER_TEXT;
        match counts.last_mut() {
            Some((last, count)) if *last == id => *count += 1,
            _ if full => {}
            _ => counts.push((id, 1)),
        }
    }
    let norm = K1 * (1.0 - B + B * length / TYPICAL_LENGTH);
    Sparse {
        indices: counts.iter().map(|&(id, _)| id).collect(),
        values: counts
            .iter()
            .map(|&(_, count)| {
                let tf = count as f32;
                tf * (K1 + 1.0) / (tf + norm)
            })
            .collect(),
    }
}

/// `text` as a query: each distinct term once, weight 1 (a term asked twice counts
/// once, as most BM25 implementations treat queries).
pub fn query(text: &str) -> Sparse {
    let mut indices: Vec<u32> = tokens(text).iter().map(|t| term_id(t)).collect();
    indices.sort_unstable();
    indices.dedup();
    indices.truncate(MAX_TERMS_PER_TEXT);
    Sparse {
        values: vec![1.0; indices.len()],
        indices,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_numbers_and_meet_names_and_plurals() {
        assert_eq!(
            tokens("Caroline's 3 tests on 2023-05-08, v1.2 at 10:30!"),
            [
                "caroline",
                "3",
                "test",
                "on",
                "2023-05-08",
                "v1.2",
                "at",
                "10:30"
            ]
        );
        assert_eq!(tokens("class status is"), ["class", "status", "is"]);
    }

    #[test]
    fn term_ids_are_fnv1a() {
        // The published FNV-1a test vectors.
        assert_eq!(term_id(""), 0x811c_9dc5);
        assert_eq!(term_id("a"), 0xe40c_292c);
        assert_eq!(term_id("foobar"), 0xbf9c_f968);
    }

    #[test]
    fn documents_weigh_repeats_with_saturation_and_queries_count_a_term_once() {
        let doc = document("login login tests, the login test");
        let login = doc
            .indices
            .iter()
            .position(|&i| i == term_id("login"))
            .unwrap();
        let test = doc
            .indices
            .iter()
            .position(|&i| i == term_id("test"))
            .unwrap();
        assert_eq!(doc.indices.len(), 3);
        assert!(doc.indices.windows(2).all(|w| w[0] < w[1]));
        // Three logins weigh more than two tests, but less than 3/2 as much.
        assert!(doc.values[login] > doc.values[test]);
        assert!(doc.values[login] < 1.5 * doc.values[test]);
        let q = query("login Login test");
        assert_eq!(q.indices.len(), 2);
        assert_eq!(q.values, [1.0, 1.0]);
        assert!(document("").is_empty() && query(" ,.").is_empty());
    }
}
