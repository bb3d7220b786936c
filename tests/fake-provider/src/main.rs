//! `fake-provider`: a fake LLM provider (OpenAI, Anthropic and Gemini shapes) for gateway
//! tests and benchmarks. See README.md for flags, endpoints and `x-fake-*` headers.

mod answer;
mod anthropic;
mod app;
mod body;
mod config;
mod embeddings;
mod gemini;
mod oauth;
mod openai;
mod state;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::config::{Config, USAGE};
use crate::state::{App, Stats};

fn main() -> ExitCode {
    let cfg = match Config::from_args(std::env::args().skip(1)) {
        Ok(Some(cfg)) => cfg,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("fake-provider: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(cfg.threads).enable_all().build();
    match runtime {
        Ok(rt) => rt.block_on(run(cfg)),
        Err(e) => {
            eprintln!("fake-provider: cannot start runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: Config) -> ExitCode {
    let listener = match TcpListener::bind(&cfg.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fake-provider: cannot listen on {}: {e}", cfg.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fake-provider: {e}");
            return ExitCode::FAILURE;
        }
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "fake-provider listening on {addr}");
        let _ = out.flush();
    }
    let app = Arc::new(App::new(cfg));
    tokio::select! {
        _ = accept_loop(listener, app) => {}
        _ = shutdown_signal() => {}
    }
    ExitCode::SUCCESS
}

async fn accept_loop(listener: TcpListener, app: Arc<App>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // e.g. out of file descriptors: back off instead of spinning.
                eprintln!("fake-provider: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        Stats::inc(&app.stats.connections);
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| app::handle(app.clone(), req));
            // Errors here are client disconnects or deliberate drops.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
