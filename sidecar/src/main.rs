//! semgate-sidecar: the embedding/vector service of the semantic cache (not built yet).
//! The foundation issue only reserves the workspace member; the protocol is in DESIGN.md.

fn main() {
    eprintln!("semgate-sidecar: not implemented yet (semantic cache lands with issue #4)");
    std::process::exit(2);
}
