//! The local model against the sentence-transformers reference. Needs the model files:
//! `SEMGATE_MODEL_DIR=.cache/models/all-MiniLM-L6-v2` (`make model` puts them there). Without
//! it every test here fails: a missing model must not look like a passing run.
#![cfg(feature = "local-model")]

mod common;
use common::{dot, max_abs_diff, QUICKSTART};

use semgate_sidecar::embed::local::{LocalBert, Pooling};
use semgate_sidecar::embed::{CachedEmbedder, Embedder};
use std::path::PathBuf;
use std::sync::OnceLock;

fn model_dir() -> PathBuf {
    common::dir_from_env(
        "SEMGATE_MODEL_DIR",
        "point it at the all-MiniLM-L6-v2 directory \
             (`make model`, or `sidecar/fetch-model.sh .cache/models`, then \
             SEMGATE_MODEL_DIR=.cache/models/all-MiniLM-L6-v2)",
    )
}

fn model() -> &'static LocalBert {
    static MODEL: OnceLock<LocalBert> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = model_dir();
        LocalBert::load(&dir).unwrap_or_else(|e| panic!("SEMGATE_MODEL_DIR={}: {e}", dir.display()))
    })
}

#[test]
fn loads_minilm_as_sentence_transformers_configures_it() {
    let m = model();
    assert_eq!(m.dim(), 384);
    assert_eq!(m.max_len(), 256, "sentence_bert_config.json's max_seq_length");
    assert_eq!(m.pooling(), Pooling::Mean);
    // [CLS] the weather is lovely today . [SEP] with bert-base-uncased's vocabulary
    assert_eq!(m.token_ids("The weather is lovely today.").unwrap(), [101, 1996, 4633, 2003, 8403, 2651, 1012, 102]);
}

/// The sentence-transformers quickstart (model.similarity of all-MiniLM-L6-v2).
#[test]
fn matches_the_sentence_transformers_quickstart() {
    let v = model().embed(&QUICKSTART).unwrap();
    let got = [dot(&v[0], &v[1]), dot(&v[0], &v[2]), dot(&v[1], &v[2])];
    eprintln!("cosines: s0-s1 {:.5}, s0-s2 {:.5}, s1-s2 {:.5}", got[0], got[1], got[2]);
    for (g, want) in got.iter().zip([0.6660f32, 0.1046, 0.1411]) {
        assert!((g - want).abs() < 1e-3, "cosines {got:?}, want [0.6660, 0.1046, 0.1411]");
    }
}

#[test]
fn vectors_have_unit_norm() {
    let longer = "a longer text with many words, ".repeat(4);
    let texts = ["", "a", "How do I get a refund?", "émoji 🚀 and 中文", &longer];
    for (t, v) in texts.iter().zip(model().embed(&texts).unwrap()) {
        assert_eq!(v.len(), 384);
        assert!((dot(&v, &v) - 1.0).abs() < 1e-5, "norm² {} for {t:?}", dot(&v, &v));
    }
}

/// Padding to the longest text and the masked mean: a text's vector does not depend on what
/// else is in its batch.
#[test]
fn a_batch_gives_each_text_its_own_vector() {
    let long = "Please write a detailed product description for a large round handwoven jute rug \
                with a natural colour, suitable for a living room, and mention how to clean it.";
    let texts = ["hi", long, "Convert 100 USD to EUR", "The weather is lovely today.", "x y z", long];
    let batch = model().embed(&texts).unwrap();
    for (t, b) in texts.iter().zip(&batch) {
        let alone = model().embed(&[t]).unwrap().remove(0);
        let d = max_abs_diff(b, &alone);
        assert!(d < 1e-5, "{t:?}: batch and alone differ by {d}");
    }
    // more texts than one forward pass takes, in an order that is not by length: the
    // vectors come back in input order
    let many: Vec<String> = (0..40).map(|i| format!("question {i}{}", " more".repeat(i % 5))).collect();
    let refs: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
    let got = model().embed(&refs).unwrap();
    assert_eq!(got.len(), 40);
    for i in [0, 4, 31, 32, 39] {
        let alone = model().embed(&[refs[i]]).unwrap().remove(0);
        assert!(max_abs_diff(&got[i], &alone) < 1e-5, "text {i}");
    }
    assert!(model().embed(&[]).unwrap().is_empty());
}

/// Inputs are cut at the model's limit: what lies past it changes nothing, and it does not
/// fail on more tokens than the position table has.
#[test]
fn truncates_at_the_model_limit() {
    let long = "the quick brown fox jumps over the lazy dog ".repeat(120); // ~1000 tokens
    let ids = model().token_ids(&long).unwrap();
    assert_eq!(ids.len(), model().max_len());
    assert_eq!(ids.last(), Some(&102), "[SEP] is kept after truncation");
    assert_eq!(ids, model().token_ids(&format!("{long} and then something else entirely")).unwrap());
    let v = model().embed(&[&long]).unwrap().remove(0);
    assert!((dot(&v, &v) - 1.0).abs() < 1e-5);
}

#[test]
fn cached_model_gives_the_models_vectors() {
    let dir = model_dir();
    let cached = CachedEmbedder::new(LocalBert::load(&dir).unwrap(), 100);
    let a = cached.embed(&QUICKSTART).unwrap();
    let b = cached.embed(&[QUICKSTART[2], QUICKSTART[0]]).unwrap();
    assert_eq!(b, vec![a[2].clone(), a[0].clone()]);
    let direct = model().embed(&QUICKSTART).unwrap();
    for (x, y) in a.iter().zip(&direct) {
        assert!(max_abs_diff(x, y) < 1e-6);
    }
    assert_eq!(cached.model_id(), model().model_id());
}

/// bge-style models pool the [CLS] token: `1_Pooling/config.json` picks it. MiniLM's weights
/// with that setting stand in for such a model here.
#[test]
fn cls_pooling_when_the_pooling_config_asks_for_it() {
    let src = model_dir();
    let dir = std::env::temp_dir().join(format!("semgate-cls-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        let _ = std::fs::remove_file(dir.join(f));
        std::os::unix::fs::symlink(std::fs::canonicalize(src.join(f)).unwrap(), dir.join(f)).unwrap();
    }
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#,
    )
    .unwrap();
    let cls = LocalBert::load(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(cls.pooling(), Pooling::Cls);
    assert_eq!(cls.max_len(), 512, "no sentence_bert_config.json: the position table's size");
    let texts = ["hi", "The weather is lovely today.", "Convert 100 USD to EUR please"];
    let batch = cls.embed(&texts).unwrap();
    let mean = model().embed(&texts).unwrap();
    for ((t, b), m) in texts.iter().zip(&batch).zip(&mean) {
        let alone = cls.embed(&[t]).unwrap().remove(0);
        assert!(max_abs_diff(b, &alone) < 1e-5, "{t:?}");
        assert!((dot(b, b) - 1.0).abs() < 1e-5);
        assert!(max_abs_diff(b, m) > 1e-2, "CLS and mean pooling gave the same vector for {t:?}");
    }
}
