//! Unit tests of the int8 codes the embedded index scans.

use super::*;
use crate::index::dot;

use crate::synthetic::unit_vector as unit;

#[test]
fn code_scores_approximate_the_cosine() {
    let mut m = CodeMatrix::new(384);
    let rows: Vec<Vec<f32>> = (0..50).map(|i| unit(i, 384)).collect();
    for r in &rows {
        m.push(r);
    }
    let q = unit(1000, 384);
    let mut scores = Vec::new();
    m.scores(&q, &mut scores);
    assert_eq!(scores.len(), 50);
    for (r, s) in rows.iter().zip(&scores) {
        assert!((dot(r, &q) - s).abs() < 0.01, "{} vs {s}", dot(r, &q));
    }
    // A vector with itself scores about 1.
    m.scores(&rows[7], &mut scores);
    assert!((scores[7] - 1.0).abs() < 0.01);
}

#[test]
fn the_simd_dot_product_equals_the_portable_one() {
    let (a, _) = quantize(&unit(1, 389));
    let (b, _) = quantize(&unit(2, 389));
    let plain: i32 = a.iter().zip(&b).map(|(x, y)| *x as i32 * *y as i32).sum();
    assert_eq!(dot_i8(&a, &b), plain);
    assert_eq!(dot_i8_portable(&a, &b), plain);
}

#[test]
fn swap_remove_keeps_rows_aligned_with_their_vectors() {
    let mut m = CodeMatrix::new(8);
    let rows: Vec<Vec<f32>> = (0..4).map(|i| unit(i + 10, 8)).collect();
    for r in &rows {
        m.push(r);
    }
    m.swap_remove(1);
    assert_eq!(m.len(), 3);
    let mut scores = Vec::new();
    // Row order is now 0, 3, 2: each row still scores ~1 against its own vector.
    for (pos, orig) in [(0, 0), (1, 3), (2, 2)] {
        m.scores(&rows[orig], &mut scores);
        assert!((scores[pos] - 1.0).abs() < 0.02, "row {pos}: {}", scores[pos]);
    }
    m.swap_remove(2);
    m.swap_remove(0);
    m.swap_remove(0);
    assert!(m.is_empty());
}

#[test]
fn a_zero_vector_scores_zero_and_never_divides_by_zero() {
    let (codes, scale) = quantize(&[0.0; 4]);
    assert_eq!((codes, scale), (vec![0; 4], 0.0));
    let mut m = CodeMatrix::new(4);
    m.push(&[0.0; 4]);
    let mut scores = Vec::new();
    m.scores(&[0.5; 4], &mut scores);
    assert_eq!(scores, vec![0.0]);
}
