//! The local embedding model: a sentence-transformers BERT (all-MiniLM-L6-v2; bge-small-en-v1.5
//! has the same layout) run with candle on the CPU in f32. Prompts never leave the machine.
//!
//! What it does, and why:
//! - loads `config.json`, `model.safetensors` and `tokenizer.json` from one directory (what
//!   `sidecar/fetch-model.sh` installs): no hub, no network at build or run time;
//! - tokenizes with the model's own `tokenizer.json` but drops its fixed 128-token padding and
//!   truncation: padding is ours, and truncation is the model's own limit (below);
//! - truncates at `max_seq_length` of `sentence_bert_config.json` when present (256 for MiniLM:
//!   what sentence-transformers does, so vectors match the reference), else at the config's
//!   `max_position_embeddings` (512): a longer input would index past the position table;
//! - embeds a batch in chunks of texts of similar length, each chunk padded to its LONGEST
//!   text, not to a fixed length: a short prompt costs what its tokens cost;
//! - pools the last hidden state with the attention mask (mean over real tokens only, or the
//!   [CLS] token when `1_Pooling/config.json` says so, as bge does): padding never leaks in,
//!   so a text gets the same vector alone or in any batch;
//! - L2-normalises every vector: a dot product is then the cosine the index compares.
//!
//! Threads: candle's matmuls use `RAYON_NUM_THREADS` threads (default: the physical cores);
//! `RAYON_NUM_THREADS=1` keeps a process on one core.

use super::{EmbedError, Embedder};
use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// Texts embedded in one forward pass at most (bounds the attention matrices' memory).
const CHUNK: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean of the last hidden state over the real (unmasked) tokens.
    Mean,
    /// The last hidden state of the first token ([CLS]).
    Cls,
}

pub struct LocalBert {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    model_id: String,
    dim: usize,
    max_len: usize,
    pooling: Pooling,
}

fn load_err(path: &Path, reason: impl std::fmt::Display) -> EmbedError {
    EmbedError::Load { path: path.to_path_buf(), reason: reason.to_string() }
}

fn model_err(e: impl std::fmt::Display) -> EmbedError {
    EmbedError::Model(e.to_string())
}

fn read_json(path: &Path) -> Result<serde_json::Value, EmbedError> {
    let text = std::fs::read_to_string(path).map_err(|e| load_err(path, e))?;
    serde_json::from_str(&text).map_err(|e| load_err(path, e))
}

impl LocalBert {
    /// Loads the model in `dir` (its name is the model id, e.g. `all-MiniLM-L6-v2`).
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let device = Device::Cpu;
        let config_path = dir.join("config.json");
        let config: Config = serde_json::from_value(read_json(&config_path)?).map_err(|e| load_err(&config_path, e))?;

        let st_path = dir.join("sentence_bert_config.json");
        let st_max = if st_path.exists() {
            read_json(&st_path)?.get("max_seq_length").and_then(|v| v.as_u64()).map(|n| n as usize)
        } else {
            None
        };
        let max_len = st_max.map_or(config.max_position_embeddings, |n| n.min(config.max_position_embeddings));

        let pool_path = dir.join("1_Pooling").join("config.json");
        let pooling = if pool_path.exists() {
            let p = read_json(&pool_path)?;
            let flag = |k: &str| p.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
            if flag("pooling_mode_cls_token") {
                Pooling::Cls
            } else if flag("pooling_mode_mean_tokens") {
                Pooling::Mean
            } else {
                return Err(load_err(&pool_path, "only mean or CLS pooling is supported"));
            }
        } else {
            Pooling::Mean
        };

        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| load_err(&tok_path, e))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| load_err(&tok_path, e))?;

        // Read, not mmapped: no `unsafe`, and the buffer is dropped once the tensors are built.
        let weights_path = dir.join("model.safetensors");
        let bytes = std::fs::read(&weights_path).map_err(|e| load_err(&weights_path, e))?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device)
            .map_err(|e| load_err(&weights_path, e))?;
        let model = BertModel::load(vb, &config).map_err(|e| load_err(&weights_path, e))?;

        let model_id = dir
            .canonicalize()
            .unwrap_or_else(|_| PathBuf::from(dir))
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "local-bert".into());
        Ok(LocalBert { model, tokenizer, device, model_id, dim: config.hidden_size, max_len, pooling })
    }

    /// Tokens per text at most, [CLS] and [SEP] included.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Token ids of one text as the model sees them (special tokens added, truncated).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| model_err(format!("tokenizer: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// One forward pass over texts padded to the longest of them.
    fn embed_padded(&self, ids: &[&[u32]]) -> Result<Vec<Vec<f32>>, candle_core::Error> {
        let n = ids.len();
        let len = ids.iter().map(|t| t.len()).max().unwrap_or(0).max(1);
        let mut flat_ids = Vec::with_capacity(n * len);
        let mut flat_mask = Vec::with_capacity(n * len);
        for t in ids {
            flat_ids.extend_from_slice(t);
            flat_ids.resize(flat_ids.len() + len - t.len(), 0);
            flat_mask.extend(std::iter::repeat_n(1u32, t.len()));
            flat_mask.resize(flat_mask.len() + len - t.len(), 0);
        }
        let input_ids = Tensor::from_vec(flat_ids, (n, len), &self.device)?;
        let mask = Tensor::from_vec(flat_mask, (n, len), &self.device)?;
        let type_ids = input_ids.zeros_like()?;
        let hidden = self.model.forward(&input_ids, &type_ids, Some(&mask))?; // (n, len, dim)
        let pooled = match self.pooling {
            Pooling::Cls => hidden.i((.., 0))?.contiguous()?,
            Pooling::Mean => {
                let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (n, len, 1)
                let sum = hidden.broadcast_mul(&m)?.sum(1)?; // (n, dim)
                let count = m.sum(1)?.clamp(1e-9f32, f32::MAX)?; // (n, 1)
                sum.broadcast_div(&count)?
            }
        };
        let norm = pooled.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
        pooled.broadcast_div(&norm)?.to_vec2::<f32>()
    }
}

impl Embedder for LocalBert {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let ids = texts.iter().map(|t| self.token_ids(t)).collect::<Result<Vec<_>, _>>()?;
        // Similar lengths share a chunk, so little is padded; results go back in input order.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(CHUNK) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let vectors = self.embed_padded(&batch).map_err(model_err)?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}
