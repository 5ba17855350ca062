//! The committed CRDs are exactly what the Rust types generate (run `cargo run --bin crdgen` after changing src/crd).

#[test]
fn committed_crds_match_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/crds");
    for (file, generated) in byok_operator::crd::generated().expect("CRDs serialize") {
        let committed = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        assert!(committed == generated, "deploy/crds/{file} is stale: run `cargo run --bin crdgen`");
    }
}
