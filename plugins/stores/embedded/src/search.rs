//! The order of search hits.

use std::cmp::Ordering;

pub use ww_vecmath::{dot, dot_codes, norm, quantize};

/// A candidate: better is a higher score, then the smaller id (for a stable order).
pub struct Hit<'a> {
    pub score: f64,
    pub similarity: f32,
    pub slot: usize,
    pub id: &'a str,
}

impl PartialEq for Hit<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Hit<'_> {}
impl PartialOrd for Hit<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Hit<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.id.cmp(self.id))
    }
}
