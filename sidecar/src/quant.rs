//! Int8 codes of unit vectors in one contiguous block, for the embedded index's scan.
//!
//! A scope's exact search reads every vector. At 100k x 384 dimensions that is 154 MB of
//! f32 scattered over the heap, about 18 ms on one core here: memory-bound. The same scan over
//! int8 codes in one block reads 38 MB. Each vector is scaled by its largest component
//! (`code = round(x / scale)`, `scale = max|x| / 127`). So a code dot product times the two
//! scales approximates the cosine to about 1e-3. The index scans the codes for a shortlist
//! several times longer than `k` and ranks that shortlist by the exact f32 dot product, so
//! the scores it reports are exact. Only an entry whose code score falls below the
//! shortlist's can be missed. With a shortlist of 8k (at least 64), that takes a gap of
//! several code errors between ranks.

/// The codes and the scale of one vector.
pub fn quantize(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        return (vec![0; v.len()], 0.0);
    }
    let scale = max / 127.0;
    (v.iter().map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8).collect(), scale)
}

/// Integer dot product of two code rows. Sixteen independent lanes so the compiler
/// vectorises it; the AVX2 build of the same loop is chosen at run time where the CPU has it.
#[inline(always)]
fn dot_i8_portable(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: i32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| *x as i32 * *y as i32).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] as i32 * y[i] as i32;
        }
    }
    acc.iter().sum::<i32>() + tail
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
    dot_i8_portable(a, b)
}

pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above); the function is safe Rust
            // otherwise, compiled with AVX2 enabled.
            return unsafe { dot_i8_avx2(a, b) };
        }
    }
    dot_i8_portable(a, b)
}

/// Rows of codes, one per vector, in insertion order (the index keeps its records in the
/// same order and removes with `swap_remove` on both).
#[inline(always)]
fn scan_portable(codes: &[i8], scales: &[f32], dim: usize, q: &[i8], q_scale: f32, out: &mut Vec<f32>) {
    out.extend(codes.chunks_exact(dim).zip(scales).map(|(row, s)| dot_i8_portable(row, q) as f32 * s * q_scale));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scan_avx2(codes: &[i8], scales: &[f32], dim: usize, q: &[i8], q_scale: f32, out: &mut Vec<f32>) {
    scan_portable(codes, scales, dim, q, q_scale, out)
}

#[derive(Debug, Clone)]
pub struct CodeMatrix {
    dim: usize,
    codes: Vec<i8>,
    scales: Vec<f32>,
}

impl CodeMatrix {
    pub fn new(dim: usize) -> Self {
        CodeMatrix { dim, codes: Vec::new(), scales: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.scales.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scales.is_empty()
    }

    pub fn push(&mut self, v: &[f32]) {
        debug_assert_eq!(v.len(), self.dim);
        let (codes, scale) = quantize(v);
        self.codes.extend_from_slice(&codes);
        self.scales.push(scale);
    }

    /// Remove row `i`, moving the last row into its place (as `Vec::swap_remove`).
    pub fn swap_remove(&mut self, i: usize) {
        let last = self.len() - 1;
        if i != last {
            let (head, tail) = self.codes.split_at_mut(last * self.dim);
            head[i * self.dim..(i + 1) * self.dim].copy_from_slice(&tail[..self.dim]);
        }
        self.codes.truncate(last * self.dim);
        self.scales.swap_remove(i);
    }

    /// Approximate cosine of the query with every row, in row order.
    pub fn scores(&self, query: &[f32], out: &mut Vec<f32>) {
        let (q, q_scale) = quantize(query);
        out.clear();
        out.reserve(self.len());
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                // One dispatch for the whole scan, so the dot product inlines into the loop.
                unsafe { scan_avx2(&self.codes, &self.scales, self.dim.max(1), &q, q_scale, out) };
                return;
            }
        }
        scan_portable(&self.codes, &self.scales, self.dim.max(1), &q, q_scale, out);
    }
}

#[cfg(test)]
#[path = "tests/quant_tests.rs"]
mod tests;
