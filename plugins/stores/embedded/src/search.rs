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

/// The dot product of two 8-bit code vectors, exact in `i32`: on wasm, widened to 16 bits
/// and multiplied pairwise-added by `i32x4.dot_i16x8_s`, 32 codes per iteration.
#[cfg(target_arch = "wasm32")]
#[inline(never)]
pub fn dot_codes(a: &[i8], b: &[i8]) -> i32 {
    use core::arch::wasm32::*;
    let n = a.len().min(b.len());
    let load = |s: &[i8], i: usize| {
        // SAFETY: callers pass i + 16 <= n <= s.len(); v128_load needs no alignment.
        unsafe { v128_load(s.as_ptr().add(i) as *const v128) }
    };
    let sixteen = |i: usize| {
        let (x, y) = (load(a, i), load(b, i));
        i32x4_add(
            i32x4_dot_i16x8(i16x8_extend_low_i8x16(x), i16x8_extend_low_i8x16(y)),
            i32x4_dot_i16x8(i16x8_extend_high_i8x16(x), i16x8_extend_high_i8x16(y)),
        )
    };
    let mut acc = i32x4_splat(0);
    let mut i = 0;
    while i + 32 <= n {
        acc = i32x4_add(acc, i32x4_add(sixteen(i), sixteen(i + 16)));
        i += 32;
    }
    while i + 16 <= n {
        acc = i32x4_add(acc, sixteen(i));
        i += 16;
    }
    let mut sum = i32x4_extract_lane::<0>(acc)
        + i32x4_extract_lane::<1>(acc)
        + i32x4_extract_lane::<2>(acc)
        + i32x4_extract_lane::<3>(acc);
    while i < n {
        sum += i32::from(a[i]) * i32::from(b[i]);
        i += 1;
    }
    sum
}

/// The dot product of two 8-bit code vectors (non-wasm builds).
#[cfg(not(target_arch = "wasm32"))]
pub fn dot_codes(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum()
}

/// A vector as 8-bit codes and a scale: value ≈ code × scale, within scale / 2.
pub fn quantize(vector: &[f32]) -> (Vec<i8>, f32) {
    let max = vector
        .iter()
        .fold(0.0f32, |m, x| if x.abs() > m { x.abs() } else { m });
    if max == 0.0 {
        return (vec![0; vector.len()], 0.0);
    }
    let scale = max / 127.0;
    let codes = vector
        .iter()
        .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (codes, scale)
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
