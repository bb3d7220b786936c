//! Milliseconds per short prompt with a local model, one prompt per call as the server
//! embeds them. One core: `RAYON_NUM_THREADS=1` (candle's matmuls read it).
//!
//!   RAYON_NUM_THREADS=1 cargo run --release -p semgate-sidecar --features local-model \
//!       --example embed_bench -- [--embedder local|wordllama] MODEL_DIR [ROUNDS]
//!
//! `local` (the default) is MiniLM (.cache/models/all-MiniLM-L6-v2); `wordllama` is
//! WordLlama l2_supercat (.cache/models/wordllama-l2-supercat).

use semgate_sidecar::embed::local::LocalBert;
use semgate_sidecar::embed::wordllama::WordLlama;
use semgate_sidecar::embed::{EmbedError, Embedder};
use std::time::Instant;

const PROMPTS: [&str; 10] = [
    "How do I get a refund?",
    "What is your return policy?",
    "Convert 100 USD to EUR",
    "write a description for a large round jute rug",
    "How do I reverse a list in Python?",
    "When will I be charged for my preorder?",
    "What's the distance between Madrid and Barcelona?",
    "Can I switch my plan from monthly to annual?",
    "The weather is lovely today.",
    "Is Rust faster than Go for web servers?",
];

/// A model and how it tokenizes (for the tokens-per-prompt line).
trait Bench: Embedder {
    fn tokens(&self, text: &str) -> Result<Vec<u32>, EmbedError>;
}

impl Bench for LocalBert {
    fn tokens(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        self.token_ids(text)
    }
}

impl Bench for WordLlama {
    fn tokens(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        self.token_ids(text)
    }
}

fn main() {
    const USAGE: &str = "usage: embed_bench [--embedder local|wordllama] MODEL_DIR [ROUNDS]";
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let kind = if args.first().map(String::as_str) == Some("--embedder") {
        let kind = args.get(1).expect(USAGE).clone();
        args.drain(..2);
        kind
    } else {
        "local".to_string()
    };
    let mut args = args.into_iter();
    let dir = args.next().expect(USAGE);
    let rounds: usize = args.next().map_or(30, |r| r.parse().expect("ROUNDS"));
    let t = Instant::now();
    let model: Box<dyn Bench> = match kind.as_str() {
        "local" => Box::new(LocalBert::load(dir.as_ref()).unwrap_or_else(|e| panic!("{e}"))),
        "wordllama" => Box::new(WordLlama::load(dir.as_ref()).unwrap_or_else(|e| panic!("{e}"))),
        other => panic!("unknown embedder {other}; {USAGE}"),
    };
    println!("loaded {} in {:.0} ms", model.model_id(), t.elapsed().as_secs_f64() * 1e3);
    println!(
        "threads: {} (RAYON_NUM_THREADS={:?})",
        candle_core::utils::get_num_threads(),
        std::env::var("RAYON_NUM_THREADS").ok()
    );
    let tokens: usize = PROMPTS.iter().map(|p| model.tokens(p).unwrap().len()).sum();
    for p in PROMPTS {
        model.embed(&[p]).unwrap(); // warm up
    }
    let mut ms = Vec::new();
    for _ in 0..rounds {
        for p in PROMPTS {
            let t = Instant::now();
            model.embed(&[p]).unwrap();
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    let pct = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    println!(
        "one prompt per call ({:.1} tokens avg, {} calls): mean {mean:.3} ms, p50 {:.3} ms, p99 {:.3} ms",
        tokens as f64 / PROMPTS.len() as f64,
        ms.len(),
        pct(0.5),
        pct(0.99)
    );
    let t = Instant::now();
    for _ in 0..rounds {
        model.embed(&PROMPTS).unwrap();
    }
    let per = t.elapsed().as_secs_f64() * 1e3 / (rounds * PROMPTS.len()) as f64;
    println!("batches of {}: {per:.3} ms per prompt", PROMPTS.len());
}
