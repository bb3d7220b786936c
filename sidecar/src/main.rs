//! semgate-sidecar: serves the semantic cache's API beside Envoy.
//!
//!   semgate-sidecar [--listen 127.0.0.1:18100] [--data-dir .run/sidecar] [--config FILE]
//!                   [--embedder local|wordllama|openai|hashing] [--model-dir DIR] [--threshold 0.70]
//!                   [--embed-url URL --embed-model NAME [--embed-key-env VAR] [--embed-dim N]
//!                    [--embed-timeout-ms 10000] [--embed-batch 64]]
//!                   [--vectors embedded|chroma] [--chroma-url http://127.0.0.1:8000]
//!                   [--chroma-collection semgate] [--token-file FILE] [--stage-one WORDLLAMA_DIR]
//!                   [--ledger embedded|redis://HOST:PORT|off] [--vertex-credentials PROVIDER=FILE]
//!
//! `--vertex-credentials` holds a Google service-account key for a `vertex` provider whose
//! `auth` is `sidecar_token`: the sidecar mints its access tokens (see `gcp`).
//!
//! `--ledger` keeps the spend ledger that Envoy replicas sync to (`/v1/ledger/sync`,
//! `GET /v1/ledger`): `embedded` (the default) journals it under `--data-dir`; `redis://`
//! keeps it in a Redis server that several sidecars share.
//!
//! `/v1/lookup` and `/v1/store` require `Authorization: Bearer <token>`: the token is read from
//! `--token-file` or the environment variable `SEMGATE_SIDECAR_TOKEN`. Without one the sidecar
//! only starts on a loopback address (and warns): a sidecar reachable from the network
//! without a token would let anyone read or plant cached answers.
//!
//! `--embedder local` (the default when built with the `local-model` feature) runs MiniLM from
//! `--model-dir`; `wordllama` runs WordLlama l2_supercat (a token-embedding table: much faster,
//! weaker on paraphrases) from `--model-dir`; with either, prompts never leave the machine.
//! `openai` calls any OpenAI-compatible `POST <embed-url>/embeddings` (OpenAI, TEI, vLLM,
//! Ollama): the prompt text is sent there. Its key is read from the environment variable named
//! by `--embed-key-env`, so it is in no command line. `hashing` is a bag-of-words test double for tests and demos without the model.
//! `--vectors embedded` (the default) keeps vectors in the sidecar with a journal in
//! `--data-dir`; `--vectors chroma` keeps them, with the prompt texts and cached answers, in a
//! Chroma collection (see `index::chroma`). `--stage-one DIR` (with the embedded index) loads
//! WordLlama from DIR as the lookup's first stage: a lookup no stored text can pass is a miss
//! without the model (see `stage_one`). On SIGTERM/SIGINT it stops accepting, then
//! flushes the index journal.

use semgate_sidecar::embed::openai::{key_from_env, OpenAiConfig, OpenAiEmbedder};
use semgate_sidecar::embed::{CachedEmbedder, Embedder, HashingEmbedder};
use semgate_sidecar::index::chroma::ChromaStore;
use semgate_sidecar::index::{FlatIndex, VectorStore};
use semgate_sidecar::server::{now_ms, router_with, AppState, ServerConfig};
use semgate_sidecar::stage_one::StageOne;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The text -> vector cache in front of a real embedder: the bytes 50k MiniLM vectors take
/// (~77 MB), so a wider model keeps fewer entries, not more memory.
const EMBED_CACHE_BYTES: usize = 50_000 * 384 * 4;

const USAGE: &str =
    "usage: semgate-sidecar [--listen ADDR] [--data-dir DIR] [--config FILE] [--threshold F] [--max-entries N]
       [--ledger embedded|redis://HOST:PORT|off]  the spend ledger replicas sync to (default embedded,
                            journaled under --data-dir; redis:// shares one between sidecars)
       [--token-file FILE]  bearer token for /v1/lookup and /v1/store (or env SEMGATE_SIDECAR_TOKEN);
                            required unless --listen is a loopback address
       [--embedder local|wordllama|openai|hashing]
  local:     --model-dir DIR  MiniLM on this machine (build with --features local-model)
  wordllama: --model-dir DIR  WordLlama l2_supercat on this machine (same feature): far faster
             than MiniLM, finds fewer paraphrases (see the README)
  openai:  --embed-url URL --embed-model NAME [--embed-key-env VAR] [--embed-dim N]
           [--embed-timeout-ms MS] [--embed-batch N]
           any OpenAI-compatible POST <URL>/embeddings, e.g. https://api.openai.com/v1 or
           http://127.0.0.1:8080/v1; the prompt text leaves the machine. The key is read from the
           environment variable VAR. --embed-dim is sent as `dimensions`; without it the
           dimension is learnt from one probe request at startup.
  hashing: a bag-of-words test double
       [--vectors embedded|chroma]
  embedded: vectors in the sidecar, journaled under --data-dir (default; --max-entries caps it)
  chroma:   vectors, prompt texts and cached answers in a Chroma collection (chromadb 1.x):
            [--chroma-url URL] (default http://127.0.0.1:8000) [--chroma-collection NAME] (default semgate)
       [--vertex-credentials PROVIDER=FILE]  a Google service-account key file (repeatable): the
                          sidecar mints and renews Vertex AI access tokens from it and serves them
                          to the filter at POST /v1/vertex/token (token required)
       [--stage-one DIR]  WordLlama from DIR as a first stage that answers lookups no stored text
                          can pass without running the model (embedded vectors only)";

struct Args {
    listen: String,
    data_dir: PathBuf,
    config: Option<PathBuf>,
    embedder: String,
    model_dir: Option<PathBuf>,
    threshold: Option<f32>,
    max_entries: usize,
    vectors: String,
    chroma_url: String,
    chroma_collection: String,
    embed_url: Option<String>,
    embed_model: Option<String>,
    embed_key_env: Option<String>,
    embed_dim: Option<usize>,
    embed_timeout_ms: u64,
    embed_batch: usize,
    token_file: Option<PathBuf>,
    ledger: String,
    stage_one: Option<PathBuf>,
    vertex_credentials: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        listen: "127.0.0.1:18100".into(),
        data_dir: PathBuf::from(".run/sidecar"),
        config: None,
        embedder: if cfg!(feature = "local-model") { "local" } else { "hashing" }.into(),
        model_dir: None,
        threshold: None,
        max_entries: 200_000,
        vectors: "embedded".into(),
        chroma_url: "http://127.0.0.1:8000".into(),
        chroma_collection: "semgate".into(),
        embed_url: None,
        embed_model: None,
        embed_key_env: None,
        embed_dim: None,
        embed_timeout_ms: 10_000,
        embed_batch: 64,
        token_file: None,
        ledger: "embedded".into(),
        stage_one: None,
        vertex_credentials: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => a.listen = value()?,
            "--data-dir" => a.data_dir = value()?.into(),
            "--config" => a.config = Some(value()?.into()),
            "--embedder" => a.embedder = value()?,
            "--model-dir" => a.model_dir = Some(value()?.into()),
            "--threshold" => a.threshold = Some(value()?.parse().map_err(|e| format!("--threshold: {e}"))?),
            "--max-entries" => a.max_entries = value()?.parse().map_err(|e| format!("--max-entries: {e}"))?,
            "--vectors" => a.vectors = value()?,
            "--chroma-url" => a.chroma_url = value()?,
            "--chroma-collection" => a.chroma_collection = value()?,
            "--embed-url" => a.embed_url = Some(value()?),
            "--embed-model" => a.embed_model = Some(value()?),
            "--embed-key-env" => a.embed_key_env = Some(value()?),
            "--embed-dim" => a.embed_dim = Some(value()?.parse().map_err(|e| format!("--embed-dim: {e}"))?),
            "--embed-timeout-ms" => {
                a.embed_timeout_ms = value()?.parse().map_err(|e| format!("--embed-timeout-ms: {e}"))?
            }
            "--embed-batch" => a.embed_batch = value()?.parse().map_err(|e| format!("--embed-batch: {e}"))?,
            "--token-file" => a.token_file = Some(value()?.into()),
            "--ledger" => a.ledger = value()?,
            "--stage-one" => a.stage_one = Some(value()?.into()),
            "--vertex-credentials" => a.vertex_credentials.push(value()?),
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown flag {other} (see --help)")),
        }
    }
    Ok(a)
}

/// The data endpoints' token, from `--token-file` or `SEMGATE_SIDECAR_TOKEN`; `None` is only
/// accepted when the listener is on loopback.
fn auth_token(args: &Args, listen: &std::net::SocketAddr) -> Result<Option<String>, String> {
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("--token-file {}: {e}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("SEMGATE_SIDECAR_TOKEN").ok().map(|t| t.trim().to_string()),
    };
    match token {
        Some(t) if t.len() < 16 => Err("the sidecar token must be at least 16 characters".into()),
        Some(t) => Ok(Some(t)),
        None if listen.ip().is_loopback() => {
            eprintln!("semgate-sidecar: warning: no token (--token-file or SEMGATE_SIDECAR_TOKEN): any local process can read and write the cache");
            Ok(None)
        }
        None => Err(format!(
            "refusing to listen on {listen} without a token: set --token-file or SEMGATE_SIDECAR_TOKEN (the filter sends it)"
        )),
    }
}

fn embedder(args: &Args) -> Result<Arc<dyn Embedder>, String> {
    match args.embedder.as_str() {
        "hashing" => Ok(Arc::new(HashingEmbedder { dim: 384 })),
        "local" => local_embedder(args),
        "wordllama" => wordllama_embedder(args),
        "openai" => openai_embedder(args),
        other => Err(format!("unknown embedder {other}: local, wordllama, openai or hashing")),
    }
}

fn cached<E: Embedder + 'static>(inner: E) -> Arc<dyn Embedder> {
    let capacity = EMBED_CACHE_BYTES / (inner.dim().max(1) * 4);
    Arc::new(CachedEmbedder::new(inner, capacity))
}

fn openai_embedder(args: &Args) -> Result<Arc<dyn Embedder>, String> {
    let url = args.embed_url.clone().ok_or("--embedder openai needs --embed-url (e.g. https://api.openai.com/v1)")?;
    let model =
        args.embed_model.clone().ok_or("--embedder openai needs --embed-model (e.g. text-embedding-3-small)")?;
    let api_key = match &args.embed_key_env {
        None => None,
        Some(var) => Some(key_from_env(var).map_err(|e| format!("--embed-key-env: {e}"))?),
    };
    let config = OpenAiConfig {
        api_key,
        dimensions: args.embed_dim,
        timeout: Duration::from_millis(args.embed_timeout_ms),
        max_batch: args.embed_batch,
        ..OpenAiConfig::new(url, model)
    };
    Ok(cached(OpenAiEmbedder::new(config).map_err(|e| e.to_string())?))
}

#[cfg(feature = "local-model")]
fn local_embedder(args: &Args) -> Result<Arc<dyn Embedder>, String> {
    let dir = args.model_dir.clone().ok_or("--embedder local needs --model-dir (make model fetches it)")?;
    let model = semgate_sidecar::embed::local::LocalBert::load(&dir).map_err(|e| e.to_string())?;
    Ok(cached(model))
}

#[cfg(feature = "local-model")]
fn wordllama_embedder(args: &Args) -> Result<Arc<dyn Embedder>, String> {
    let dir = args.model_dir.clone().ok_or("--embedder wordllama needs --model-dir (make model fetches it)")?;
    let model = semgate_sidecar::embed::wordllama::WordLlama::load(&dir).map_err(|e| e.to_string())?;
    // No text -> vector cache: embedding a prompt here (a few microseconds) costs about what a
    // cache lookup does, and the cache would hold up to ~77 MB.
    Ok(Arc::new(model))
}

#[cfg(not(feature = "local-model"))]
fn local_embedder(_: &Args) -> Result<Arc<dyn Embedder>, String> {
    Err("this build has no local model: build with `--features local-model`, or use --embedder openai or hashing"
        .into())
}

#[cfg(not(feature = "local-model"))]
fn wordllama_embedder(args: &Args) -> Result<Arc<dyn Embedder>, String> {
    local_embedder(args)
}

/// The spend ledger the flags choose.
fn ledger(args: &Args) -> Result<Option<semgate_sidecar::ledger::LedgerState>, String> {
    use semgate_sidecar::ledger::{redis::RedisLedger, FileLedger, LedgerState, LedgerStore};
    let store: Arc<dyn LedgerStore> = match args.ledger.as_str() {
        "off" => return Ok(None),
        "embedded" => {
            let path = args.data_dir.join("ledger.journal");
            Arc::new(FileLedger::open(&path, 1024).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        url if url.starts_with("redis://") => {
            Arc::new(RedisLedger::open(url).map_err(|e| format!("--ledger {url}: {e}"))?)
        }
        other => return Err(format!("unknown --ledger {other}: embedded, redis://HOST:PORT or off")),
    };
    Ok(Some(LedgerState::new(store)))
}

/// The vector store the flags choose, and where it keeps its data (for the startup line).
fn vector_store(
    args: &Args,
    embedder: &dyn Embedder,
    max_bytes: usize,
) -> Result<(Arc<dyn VectorStore>, String), String> {
    match args.vectors.as_str() {
        "embedded" => {
            let journal = args.data_dir.join(format!("vectors-{}.journal", embedder.model_id()));
            let index = FlatIndex::open_bounded(&journal, embedder.dim(), args.max_entries, max_bytes, now_ms())
                .map_err(|e| format!("{}: {e}", journal.display()))?;
            Ok((Arc::new(index), format!("journal {}", journal.display())))
        }
        "chroma" => {
            let (url, collection) = (&args.chroma_url, &args.chroma_collection);
            let store = ChromaStore::connect(url, collection, embedder.model_id(), embedder.dim(), now_ms())
                .map_err(|e| format!("--vectors chroma: {e}"))?;
            Ok((Arc::new(store), format!("Chroma {url} collection {collection}")))
        }
        other => Err(format!("unknown --vectors {other}: embedded or chroma")),
    }
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("semgate-sidecar: {e}");
        std::process::exit(2);
    }
}

async fn run() -> Result<(), String> {
    let args = parse_args()?;
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            serde_json::from_str::<ServerConfig>(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => ServerConfig::default(),
    };
    if let Some(t) = args.threshold {
        config.threshold = t;
    }
    let listener =
        tokio::net::TcpListener::bind(&args.listen).await.map_err(|e| format!("bind {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let token = auth_token(&args, &addr)?;
    let embedder = embedder(&args)?;
    // Blocking setup calls (Chroma) are fine here: nothing is served yet.
    let (index, where_) = vector_store(&args, embedder.as_ref(), config.index_max_bytes)?;
    let stage_one = stage_one(&args, &config, index.as_ref())?;
    let state = AppState::with_options(config, embedder.clone(), index.clone(), token, stage_one);
    let ledger = ledger(&args)?;
    let vertex = semgate_sidecar::gcp::Credentials::load(&args.vertex_credentials).map_err(|e| e.to_string())?;
    if !vertex.is_empty() {
        vertex.spawn_renewal();
        let _ = state.vertex.set(vertex);
    }
    println!("semgate-sidecar listening on {addr} (model {}, {} entries, {where_})", embedder.model_id(), index.len());
    axum::serve(listener, router_with(state, ledger))
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|e| e.to_string())?;
    index.flush().map_err(|e| e.to_string())?;
    eprintln!("semgate-sidecar: index flushed, {} entries", index.len());
    Ok(())
}

#[cfg(feature = "local-model")]
fn stage_one(args: &Args, config: &ServerConfig, index: &dyn VectorStore) -> Result<Option<Arc<StageOne>>, String> {
    let Some(dir) = &args.stage_one else { return Ok(None) };
    let model = semgate_sidecar::embed::wordllama::WordLlama::load(dir).map_err(|e| e.to_string())?;
    let s1 = Arc::new(StageOne::new(config.stage_one.clone(), Arc::new(model), args.max_entries));
    let started = std::time::Instant::now();
    let listed = index.each_text(&mut |scope, text, expires| s1.insert(&config.guard, scope, text, expires));
    if !listed {
        return Err("--stage-one needs the embedded vector store (--vectors embedded)".into());
    }
    eprintln!("semgate-sidecar: first stage holds {} texts ({:.1} s)", s1.len(), started.elapsed().as_secs_f64());
    Ok(Some(s1))
}

#[cfg(not(feature = "local-model"))]
fn stage_one(args: &Args, _: &ServerConfig, _: &dyn VectorStore) -> Result<Option<Arc<StageOne>>, String> {
    match args.stage_one {
        Some(_) => Err("--stage-one needs a build with `--features local-model`".into()),
        None => Ok(None),
    }
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            return;
        }
    }
    let _ = ctrl_c.await;
}
