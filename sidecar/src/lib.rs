//! semgate-sidecar: the semantic cache's embedding and vector service (protocol in
//! shared/DESIGN.md). Modules: `guard` (semantic-hit verification), `index` (vector store).

pub mod guard;
pub mod index;
