//! The arithmetic of search: dot products (written to compile to SIMD) and the order of
//! hits.

use std::cmp::Ordering;

/// The dot product: explicit 128-bit SIMD on wasm. Each loop iteration multiplies 32
/// values and sums them in a tree before touching the accumulator: the loop's back edge
/// carries an epoch check (wasmtime's deadline), around which the compiler keeps the
/// accumulator on the stack, so fewer, fatter iterations run faster.
#[cfg(target_arch = "wasm32")]
#[inline(never)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    use core::arch::wasm32::*;
    let n = a.len().min(b.len());
    let load = |s: &[f32], i: usize| {
        // SAFETY: callers pass i + 4 <= n <= s.len(); v128_load needs no alignment.
        unsafe { v128_load(s.as_ptr().add(i) as *const v128) }
    };
    let product = |i: usize| f32x4_mul(load(a, i), load(b, i));
    let mut acc = f32x4_splat(0.0);
    let mut i = 0;
    while i + 32 <= n {
        let low = f32x4_add(
            f32x4_add(product(i), product(i + 4)),
            f32x4_add(product(i + 8), product(i + 12)),
        );
        let high = f32x4_add(
            f32x4_add(product(i + 16), product(i + 20)),
            f32x4_add(product(i + 24), product(i + 28)),
        );
        acc = f32x4_add(acc, f32x4_add(low, high));
        i += 32;
    }
    while i + 4 <= n {
        acc = f32x4_add(acc, product(i));
        i += 4;
    }
    let mut sum = f32x4_extract_lane::<0>(acc)
        + f32x4_extract_lane::<1>(acc)
        + f32x4_extract_lane::<2>(acc)
        + f32x4_extract_lane::<3>(acc);
    while i < n {
        sum += a[i] * b[i];
        i += 1;
    }
    sum
}

/// The dot product (non-wasm builds).
#[cfg(not(target_arch = "wasm32"))]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn norm(vector: &[f32]) -> f32 {
    dot(vector, vector).sqrt()
}

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
