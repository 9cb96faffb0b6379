//! Vector arithmetic for components: dot products written for how wasmtime compiles wasm
//! SIMD, 8-bit quantisation with an error bound, and an exact similarity threshold test
//! that uses the cheap approximation whenever the bound settles the answer.
//!
//! Used by the embedded store (search) and by the memory services (consolidation).

// The tails of the SIMD loops index both slices below `n`, the shorter length.
#![allow(clippy::indexing_slicing)]

/// The dot product of `a` and `b` over their shorter length (SIMD128).
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

/// The L2 norm of `vector`.
pub fn norm(vector: &[f32]) -> f32 {
    dot(vector, vector).sqrt()
}

/// A vector prepared for fast comparisons: its 8-bit codes, their scale, and the vector's
/// L1 and L2 norms.
pub struct Quantized {
    /// The 8-bit codes, one per component.
    pub codes: Vec<i8>,
    /// What one code step is worth.
    pub scale: f32,
    /// The vector's L1 norm.
    pub l1: f32,
    /// The vector's L2 norm.
    pub norm: f32,
}

impl Quantized {
    /// `vector` quantized, with its norms.
    pub fn new(vector: &[f32]) -> Self {
        let (codes, scale) = quantize(vector);
        Self {
            codes,
            scale,
            l1: vector.iter().map(|x| x.abs()).sum(),
            norm: norm(vector),
        }
    }
}

/// An upper bound on |a·b − s_a·s_b·(â·b̂)| for two quantised vectors of `n` values:
/// ‖a‖₁·s_b/2 + (‖b‖₁ + n·s_b/2)·s_a/2.
pub fn quantization_error(a: &Quantized, b: &Quantized, n: usize) -> f32 {
    (a.l1 * b.scale + (b.l1 + n as f32 * b.scale / 2.0) * a.scale) / 2.0
}

/// Whether cosine(a, b) ≥ `threshold`, exactly: decided from the 8-bit codes when their
/// error bound leaves no doubt, from the full vectors otherwise.
pub fn similar_at_least(
    a: &Quantized,
    va: &[f32],
    b: &Quantized,
    vb: &[f32],
    threshold: f32,
) -> bool {
    let denominator = a.norm * b.norm;
    if denominator <= 0.0 {
        return 0.0 >= threshold;
    }
    let approximate = a.scale * b.scale * dot_codes(&a.codes, &b.codes) as f32;
    // Generous for the rounding of the f32 arithmetic itself.
    let error = quantization_error(a, b, va.len()) * 1.001 + 1e-6 * denominator;
    if approximate - error >= threshold * denominator {
        true
    } else if approximate + error < threshold * denominator {
        false
    } else {
        dot(va, vb) / denominator >= threshold
    }
}

/// Cosine similarity (0 when either vector is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let denominator = norm(a) * norm(b);
    if denominator > 0.0 {
        dot(a, b) / denominator
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_test_agrees_with_exact_cosine() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        };
        let base: Vec<f32> = (0..384).map(|_| next()).collect();
        for noise in [0.05f32, 0.2, 0.5, 1.0, 3.0] {
            for _ in 0..50 {
                let other: Vec<f32> = base.iter().map(|x| x + noise * next()).collect();
                let exact = cosine(&base, &other);
                let (qa, qb) = (Quantized::new(&base), Quantized::new(&other));
                for threshold in [0.5, 0.75, 0.85, 0.95, exact, exact + 1e-4, exact - 1e-4] {
                    assert_eq!(
                        similar_at_least(&qa, &base, &qb, &other, threshold),
                        exact >= threshold,
                        "noise {noise}, cosine {exact}, threshold {threshold}"
                    );
                }
            }
        }
    }
}
