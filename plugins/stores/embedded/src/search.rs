//! Nearest neighbours: one pass over the points that pass the filter, scoring each by
//! cosine similarity (or a rescoring formula over it) and keeping the best in a heap.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use ww_guest::store::vector::{Rescore, ScoreTerm};
use ww_guest::store::{Field, FieldValue};

use crate::state::CollectionData;

/// The dot product, in eight lanes so that it compiles to SIMD.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (a_chunks, a_rest) = a.as_chunks::<8>();
    let (b_chunks, b_rest) = b.as_chunks::<8>();
    let mut lanes = [0.0f32; 8];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    let rest: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + rest
}

pub fn norm(vector: &[f32]) -> f32 {
    dot(vector, vector).sqrt()
}

fn number(fields: &[Field], name: &str) -> Option<f64> {
    fields
        .iter()
        .find(|f| f.name == name)
        .and_then(|f| match f.value {
            FieldValue::Integer(i) => Some(i as f64),
            FieldValue::Number(n) => Some(n),
            _ => None,
        })
}

/// The formula's value for a point with cosine similarity `cosine`.
pub fn rescore(formula: &Rescore, cosine: f32, payload: &[Field]) -> f64 {
    let mut score = formula.similarity_weight * f64::from(cosine.max(0.0));
    for term in &formula.terms {
        score += match term {
            ScoreTerm::Linear((field, weight)) => weight * number(payload, field).unwrap_or(0.0),
            ScoreTerm::ExpDecay(decay) => number(payload, &decay.field).map_or(0.0, |x| {
                decay.weight * (-(x - decay.origin).abs() / decay.scale).exp()
            }),
        };
    }
    score
}

/// A candidate: better is a higher score, then the smaller id (for a stable order).
pub struct Hit<'a> {
    pub score: f64,
    pub similarity: f32,
    pub id: &'a String,
    pub payload: &'a [Field],
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

/// The best `keep` points passing `accept`, best first, and how many passed.
pub fn top<'a>(
    data: &'a CollectionData,
    query: &[f32],
    formula: Option<&Rescore>,
    keep: usize,
    accept: impl Fn(&[Field]) -> bool,
) -> (Vec<Hit<'a>>, usize) {
    let query_norm = norm(query);
    let mut heap: BinaryHeap<Reverse<Hit<'a>>> = BinaryHeap::with_capacity(keep + 1);
    let mut candidates = 0;
    for (id, point) in &data.points {
        if !accept(&point.payload) {
            continue;
        }
        candidates += 1;
        let denominator = point.norm * query_norm;
        // A formula that ignores similarity (latest first, say) needs no dot product.
        let similarity = if formula.is_some_and(|f| f.similarity_weight == 0.0) {
            0.0
        } else if denominator > 0.0 {
            (dot(&point.vector, query) / denominator).clamp(-1.0, 1.0)
        } else {
            0.0
        };
        let score = match formula {
            Some(formula) => rescore(formula, similarity, &point.payload),
            None => f64::from(similarity),
        };
        let hit = Hit {
            score,
            similarity,
            id,
            payload: &point.payload,
        };
        if heap.len() < keep {
            heap.push(Reverse(hit));
        } else if heap.peek().is_some_and(|Reverse(worst)| hit > *worst) {
            heap.pop();
            heap.push(Reverse(hit));
        }
    }
    let mut hits: Vec<Hit<'a>> = heap.into_iter().map(|Reverse(hit)| hit).collect();
    hits.sort_by(|a, b| b.cmp(a));
    (hits, candidates)
}
