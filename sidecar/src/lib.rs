//! semgate-sidecar: the semantic cache's embedding and vector service (protocol in
//! docs/design.md). `embed` (models), `guard` (semantic-hit verification), `exact` (the shared
//! exact tier), `index` (vector store), `ledger` (global spend), `gcp` (Vertex
//! access tokens), `server` (the HTTP API).

pub mod embed;
pub mod exact;
pub mod gcp;
pub mod guard;
pub mod index;
pub mod ledger;
pub mod lexicon;
pub mod quant;
pub mod queue;
pub mod server;
pub mod stage_one;
pub mod synthetic;
