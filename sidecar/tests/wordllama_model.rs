//! WordLlama against the `wordllama` Python package. Needs the model files:
//! `SEMGATE_WORDLLAMA_DIR=$PWD/.cache/models/wordllama-l2-supercat` (`make model` puts them there).
//! Without it (or with the files missing) the tests that use the model fail: a missing model
//! must not look like a passing run.
#![cfg(feature = "local-model")]

mod common;
use common::{dot, max_abs_diff, QUICKSTART};

use semgate_sidecar::embed::wordllama::{WordLlama, MODEL_ID};
use semgate_sidecar::embed::{CachedEmbedder, Embedder};
use std::path::PathBuf;
use std::sync::OnceLock;

fn model_dir() -> PathBuf {
    common::dir_from_env(
        "SEMGATE_WORDLLAMA_DIR",
        "point it at the WordLlama directory \
             (`make model`, or `sidecar/fetch-model.sh .cache/models`, then \
             SEMGATE_WORDLLAMA_DIR=$PWD/.cache/models/wordllama-l2-supercat: the tests run in sidecar/)",
    )
}

fn model() -> &'static WordLlama {
    static MODEL: OnceLock<WordLlama> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = model_dir();
        WordLlama::load(&dir).unwrap_or_else(|e| panic!("SEMGATE_WORDLLAMA_DIR={}: {e}", dir.display()))
    })
}

/// Token ids as the package's tokenizer gives them (`wl.tokenize(text)[0].ids`): the Llama 2
/// vocabulary, no `<s>`, byte fallback for what the vocabulary lacks.
#[test]
fn tokenizes_as_the_package() {
    let m = model();
    assert_eq!(m.dim(), 256);
    assert_eq!(m.vocab_size(), 32000);
    assert_eq!(m.model_id(), MODEL_ID);
    assert_eq!(m.token_ids("The weather is lovely today.").unwrap(), [450, 14826, 338, 12355, 873, 9826, 29889]);
    assert_eq!(m.token_ids("héllo 🚀 中文").unwrap(), [298, 3610, 417, 29871, 243, 162, 157, 131, 29871, 30275, 30333]);
    assert!(m.token_ids("").unwrap().is_empty());
}

/// Reference cosines from the package (wordllama 0.4.0.post1, the wheel's own files):
///
/// ```text
/// python3 -m venv /tmp/wlvenv && /tmp/wlvenv/bin/pip install wordllama==0.4.0.post1
/// # the package looks for its tokenizer in wordllama/tokenizer/ but ships it in tokenizers/,
/// # so offline it is given the wheel's file through cache_dir:
/// mkdir -p /tmp/wlcache/tokenizers && cp .cache/models/wordllama-l2-supercat/l2_supercat_tokenizer_config.json /tmp/wlcache/tokenizers/
/// /tmp/wlvenv/bin/python -c 'from wordllama import WordLlama
/// wl = WordLlama.load(cache_dir="/tmp/wlcache", disable_download=True)   # l2_supercat, dim 256
/// s = ["The weather is lovely today.", "It'"'"'s so sunny outside!", "He drove to the stadium."]
/// v = wl.embed(s, norm=True); c = v @ v.T; print(c[0,1], c[0,2], c[1,2])'
/// # 0.318715 0.06581 0.092245
/// ```
#[test]
fn matches_the_python_package() {
    let v = model().embed(&QUICKSTART).unwrap();
    let got = [dot(&v[0], &v[1]), dot(&v[0], &v[2]), dot(&v[1], &v[2])];
    eprintln!("cosines: s0-s1 {:.6}, s0-s2 {:.6}, s1-s2 {:.6}", got[0], got[1], got[2]);
    for (g, want) in got.iter().zip([0.318715f32, 0.065810, 0.092245]) {
        assert!((g - want).abs() < 1e-3, "cosines {got:?}, want [0.318715, 0.065810, 0.092245]");
    }
    // the package's first five components of the first sentence's normalised vector
    let want = [0.01435358f32, 0.00834804, -0.08533566, 0.09842781, -0.05637532];
    assert!(max_abs_diff(&v[0][..5], &want) < 1e-5, "{:?}", &v[0][..5]);
}

#[test]
fn vectors_have_unit_norm_and_the_empty_text_is_zero() {
    let longer = "a longer text with many words, ".repeat(400); // ~2800 tokens: never truncated
    let texts = ["a", "How do I get a refund?", "émoji 🚀 and 中文", " ", &longer];
    for (t, v) in texts.iter().zip(model().embed(&texts).unwrap()) {
        assert_eq!(v.len(), 256);
        assert!((dot(&v, &v) - 1.0).abs() < 1e-5, "norm² {} for {t:?}", dot(&v, &v));
    }
    let empty = model().embed(&[""]).unwrap().remove(0);
    assert_eq!(empty, vec![0f32; 256], "no tokens: the zero vector, cosine 0 with everything");
}

/// The mean over all tokens: what lies past any length counts (unlike MiniLM, nothing is cut).
#[test]
fn does_not_truncate() {
    let long = "the quick brown fox jumps over the lazy dog ".repeat(120);
    let ids = model().token_ids(&long).unwrap();
    assert!(ids.len() > 1000, "{} tokens", ids.len());
    let a = model().embed(&[&long]).unwrap().remove(0);
    let b = model().embed(&[&format!("{long} and then something else entirely")]).unwrap().remove(0);
    assert!(max_abs_diff(&a, &b) > 1e-4, "the tail changed nothing");
}

#[test]
fn a_batch_gives_each_text_its_own_vector() {
    let texts = ["hi", "Convert 100 USD to EUR", "The weather is lovely today.", "x y z", "hi"];
    let batch = model().embed(&texts).unwrap();
    assert_eq!(batch.len(), texts.len());
    for (t, b) in texts.iter().zip(&batch) {
        assert_eq!(b, &model().embed(&[t]).unwrap()[0], "{t:?}");
    }
    assert!(max_abs_diff(&batch[0], &batch[1]) > 1e-2);
    assert!(model().embed(&[]).unwrap().is_empty());
}

#[test]
fn cached_model_gives_the_models_vectors() {
    let cached = CachedEmbedder::new(WordLlama::load(&model_dir()).unwrap(), 100);
    let a = cached.embed(&QUICKSTART).unwrap();
    let b = cached.embed(&[QUICKSTART[2], QUICKSTART[0]]).unwrap();
    assert_eq!(b, vec![a[2].clone(), a[0].clone()]);
    assert_eq!(a, model().embed(&QUICKSTART).unwrap());
    assert_eq!(cached.model_id(), MODEL_ID);
    assert_eq!(cached.dim(), 256);
}

/// A directory without the files is a load error naming the file, not a panic.
#[test]
fn a_missing_file_is_a_load_error() {
    let dir = std::env::temp_dir().join(format!("semgate-wordllama-missing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = WordLlama::load(&dir).err().expect("loaded from an empty directory");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(err.to_string().contains("l2_supercat_tokenizer_config.json"), "{err}");
}
