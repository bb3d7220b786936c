//! semgate-sidecar: the semantic cache's embedding and vector service (protocol in
//! shared/DESIGN.md). `embed` (models), `guard` (semantic-hit verification), `index`
//! (vector store), `server` (the HTTP API).

pub mod embed;
pub mod guard;
pub mod index;
pub mod server;
