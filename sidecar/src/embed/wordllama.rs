//! WordLlama (`l2_supercat`, 256 dimensions): a static embedding model. A text's vector is the
//! average of its tokens' rows in one table (32000 x 256, the token embeddings of Llama 2 70B
//! and others, concatenated, projected and trained for sentence similarity), so embedding is
//! a tokenizer run and a few additions: no transformer, no matmul.
//!
//! The files come from the PyPI wheel `wordllama==0.4.0.post1`, which ships them
//! (`sidecar/fetch-model.sh` installs them): `l2_supercat_256.safetensors` (one tensor,
//! `embedding.weight`, f16) and `l2_supercat_tokenizer_config.json` (the Llama 2 tokenizer in
//! the Hugging Face `tokenizers` format).
//!
//! It does what the package's `WordLlama.load()` (defaults: `l2_supercat`, dim 256, no
//! truncation of the dimensions) then `embed(texts, norm=True)` do (`wordllama/inference.py`):
//! - tokenize without special tokens (no `<s>`) and without truncation;
//! - look up each token's row, ids past the table clipped to its last row;
//! - average over the real tokens (the package pads a batch and masks the padding: a text's
//!   vector does not depend on its batch, here or there);
//! - L2-normalise. A text with no tokens (the empty string) has the zero vector, as in the
//!   package before normalisation: its cosine with everything is 0, so it never hits.
//!
//! The table is widened to f32 once at load (32 MB), as the package does.

use super::{EmbedError, Embedder};
use candle_core::{DType, Device};
use std::path::Path;
use tokenizers::Tokenizer;

/// The weights file and its tensor, as the wheel names them.
pub const WEIGHTS_FILE: &str = "l2_supercat_256.safetensors";
pub const TENSOR_KEY: &str = "embedding.weight";
/// The tokenizer, as the wheel names it.
pub const TOKENIZER_FILE: &str = "l2_supercat_tokenizer_config.json";
pub const MODEL_ID: &str = "wordllama-l2_supercat-256";
const DIM: usize = 256;

pub struct WordLlama {
    /// `rows` x `DIM`, row-major.
    table: Vec<f32>,
    rows: usize,
    tokenizer: Tokenizer,
}

fn load_err(path: &Path, reason: impl std::fmt::Display) -> EmbedError {
    EmbedError::Load { path: path.to_path_buf(), reason: reason.to_string() }
}

impl WordLlama {
    /// Loads `l2_supercat_256.safetensors` and `l2_supercat_tokenizer_config.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let tok_path = dir.join(TOKENIZER_FILE);
        let mut tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| load_err(&tok_path, e))?;
        // The file sets neither; the package pads a batch (masked) and never truncates.
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| load_err(&tok_path, e))?;

        let weights_path = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&weights_path).map_err(|e| load_err(&weights_path, e))?;
        let tensors =
            candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| load_err(&weights_path, e))?;
        drop(bytes);
        let table =
            tensors.get(TENSOR_KEY).ok_or_else(|| load_err(&weights_path, format!("no tensor {TENSOR_KEY}")))?;
        let (rows, dim) = table.dims2().map_err(|e| load_err(&weights_path, e))?;
        if dim != DIM || rows == 0 {
            return Err(load_err(&weights_path, format!("{TENSOR_KEY} is {rows} x {dim}, expected N x {DIM}")));
        }
        let table = table
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| load_err(&weights_path, e))?;
        Ok(WordLlama { table, rows, tokenizer })
    }

    /// Rows in the embedding table (the vocabulary: 32000).
    pub fn vocab_size(&self) -> usize {
        self.rows
    }

    /// Token ids of one text as the model sees them: no special tokens, no truncation.
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| EmbedError::Model(format!("tokenizer: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    fn embed_one(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let ids = self.token_ids(text)?;
        let mut v = vec![0f32; DIM];
        for &id in &ids {
            let row = (id as usize).min(self.rows - 1) * DIM;
            for (acc, x) in v.iter_mut().zip(&self.table[row..row + DIM]) {
                *acc += x;
            }
        }
        // The mean, then the norm (dividing by the count first changes only rounding; it is
        // kept so the steps are the package's).
        let count = ids.len().max(1) as f32;
        v.iter_mut().for_each(|x| *x /= count);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        Ok(v)
    }
}

impl Embedder for WordLlama {
    fn model_id(&self) -> &str {
        MODEL_ID
    }

    fn dim(&self) -> usize {
        DIM
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        texts.iter().map(|t| self.embed_one(t)).collect()
    }
}
