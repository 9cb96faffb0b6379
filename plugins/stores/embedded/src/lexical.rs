//! The lexical side of retrieval: an inverted index of each collection's text, ranked by
//! Okapi BM25 with IDF over the collection.
//!
//! Written here rather than taken from a search library (tantivy and the like): those
//! keep their own segment files and threads, where this index is a few maps rebuilt from
//! the store's own log, in step with the vectors' slots, inside a single-threaded
//! component. Tokens and BM25's constants come from `ww-lexical`, shared with the Qdrant
//! adapter's sparse vectors, so both stores read text alike.

// Slots index columns that grow and shrink together (every insert pushes to each, every
// removal swap-removes from each), and a slot comes only from the id index, which holds
// live slots; the scan's inner loops stay plain indexing, bounds-checked, for speed.
#![allow(clippy::indexing_slicing)]

use std::collections::HashMap;

use ww_lexical::{B, K1, tokens};

/// Distinct terms of one text that are indexed, at most (a bound on one point's cost).
const MAX_TERMS_PER_TEXT: usize = 4096;

/// One collection's index; slots are the vectors' slots.
#[derive(Default)]
pub struct Lexical {
    /// foldhash: every token of every text indexed is looked up here.
    term_ids: foldhash::HashMap<String, u32>,
    /// By term id: the slots whose text has it, with its count there.
    postings: Vec<Vec<(u32, u32)>>,
    /// By slot: its terms and counts (to remove it), and its length in tokens.
    documents: Vec<(Vec<(u32, u32)>, u32)>,
    /// Slots with text, and their summed lengths.
    indexed: u32,
    total_length: u64,
}

impl Lexical {
    /// Slots with text.
    pub fn indexed(&self) -> u32 {
        self.indexed
    }

    fn term(&mut self, token: String) -> u32 {
        if let Some(&id) = self.term_ids.get(&token) {
            return id;
        }
        let id = self.postings.len() as u32;
        self.term_ids.insert(token, id);
        self.postings.push(Vec::new());
        id
    }

    /// Index `text` (or nothing) at `slot`, replacing what was there; a new slot is the
    /// next one.
    pub fn set(&mut self, slot: usize, text: Option<&str>) {
        if slot < self.documents.len() {
            self.clear(slot);
        } else {
            self.documents.resize_with(slot + 1, Default::default);
        }
        let Some(text) = text else {
            return;
        };
        let tokens = tokens(text);
        if tokens.is_empty() {
            return;
        }
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for token in &tokens {
            if counts.len() >= MAX_TERMS_PER_TEXT && !self.term_ids.contains_key(token) {
                continue;
            }
            let id = self.term(token.clone());
            *counts.entry(id).or_default() += 1;
        }
        let mut terms: Vec<(u32, u32)> = counts.into_iter().collect();
        terms.sort_unstable();
        for &(term, count) in &terms {
            self.postings[term as usize].push((slot as u32, count));
        }
        let length = tokens.len() as u32;
        self.documents[slot] = (terms, length);
        self.indexed += 1;
        self.total_length += u64::from(length);
    }

    /// The terms by id, as a snapshot keeps them.
    pub fn terms(&self) -> Vec<String> {
        let mut terms = vec![String::new(); self.postings.len()];
        for (term, &id) in &self.term_ids {
            terms[id as usize] = term.clone();
        }
        terms
    }

    /// `slot`'s terms with their counts, and its length, borrowed.
    pub fn document_ref(&self, slot: usize) -> (&[(u32, u32)], u32) {
        self.documents
            .get(slot)
            .map_or((&[][..], 0), |(terms, length)| (terms.as_slice(), *length))
    }

    /// An empty index with the terms of a snapshot.
    pub fn with_terms(terms: Vec<String>) -> Self {
        let mut index = Self {
            postings: vec![Vec::new(); terms.len()],
            ..Self::default()
        };
        for (id, term) in terms.into_iter().enumerate() {
            index.term_ids.insert(term, id as u32);
        }
        index
    }

    /// Append the next slot's document as a snapshot kept it (term ids of this index);
    /// a term id out of range is refused.
    pub fn push_document(&mut self, terms: Vec<(u32, u32)>, length: u32) -> Result<(), String> {
        if let Some((bad, _)) = terms
            .iter()
            .find(|(t, _)| *t as usize >= self.postings.len())
        {
            return Err(format!(
                "a document names term {bad} of {}",
                self.postings.len()
            ));
        }
        let slot = self.documents.len() as u32;
        for &(term, count) in &terms {
            self.postings[term as usize].push((slot, count));
        }
        if !terms.is_empty() {
            self.indexed += 1;
            self.total_length += u64::from(length);
        }
        self.documents.push((terms, length));
        Ok(())
    }

    /// Remove `slot`'s text from the index (the slot stays, empty).
    fn clear(&mut self, slot: usize) {
        let (terms, length) = std::mem::take(&mut self.documents[slot]);
        if terms.is_empty() {
            return;
        }
        for (term, _) in terms {
            let postings = &mut self.postings[term as usize];
            if let Some(at) = postings.iter().position(|(s, _)| *s as usize == slot) {
                postings.swap_remove(at);
            }
        }
        self.indexed -= 1;
        self.total_length -= u64::from(length);
    }

    /// Remove `slot`, moving the last slot into its place (as the vectors do).
    pub fn remove(&mut self, slot: usize) {
        if slot >= self.documents.len() {
            return;
        }
        self.clear(slot);
        let last = self.documents.len() - 1;
        if slot != last {
            let moved = std::mem::take(&mut self.documents[last]);
            for &(term, _) in &moved.0 {
                for posting in &mut self.postings[term as usize] {
                    if posting.0 as usize == last {
                        posting.0 = slot as u32;
                    }
                }
            }
            self.documents[slot] = moved;
        }
        self.documents.pop();
    }

    /// BM25 of every slot that shares a term with `query` and passes `accepts`, indexed
    /// by slot (0 for the others). Dense: a search reads it for every slot it scans, and
    /// an array index is far cheaper there than a hash lookup.
    pub fn scores(&self, query: &str, accepts: impl Fn(usize) -> bool) -> Vec<f32> {
        let mut scores = vec![0.0_f32; self.documents.len()];
        if self.indexed == 0 {
            return scores;
        }
        let n = self.indexed as f32;
        let average = self.total_length as f32 / n;
        let mut terms: Vec<u32> = tokens(query)
            .iter()
            .filter_map(|t| self.term_ids.get(t).copied())
            .collect();
        // A term asked twice counts once (as most BM25 implementations treat queries).
        terms.sort_unstable();
        terms.dedup();
        for term in terms {
            let postings = &self.postings[term as usize];
            let df = postings.len() as f32;
            // Lucene's IDF: never negative, so a very common term adds a little, never
            // subtracts.
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for &(slot, count) in postings {
                let slot = slot as usize;
                if !accepts(slot) {
                    continue;
                }
                let tf = count as f32;
                let length = self.documents[slot].1 as f32;
                let saturation = tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * length / average));
                scores[slot] += idf * saturation;
            }
        }
        scores
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bm25_prefers_the_rarer_term_and_follows_removals() {
        let mut index = Lexical::default();
        index.set(0, Some("the flaky login test"));
        index.set(1, Some("the groceries"));
        index.set(2, Some("the login page"));
        let scores = index.scores("flaky login", |_| true);
        assert!(scores[0] > scores[2] && scores[2] > 0.0);
        assert_eq!(scores[1], 0.0);
        // Slot 0 removed: slot 2 moves into it.
        index.remove(0);
        let scores = index.scores("login page", |_| true);
        assert!(scores[0] > 0.0);
        assert_eq!(scores[1], 0.0);
        assert_eq!(index.indexed(), 2);
    }
}
