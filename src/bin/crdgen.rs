//! Writes the CRDs generated from the Rust types: `crdgen [DIR]` (default deploy/crds).

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "deploy/crds".into()));
    std::fs::create_dir_all(&dir)?;
    for (file, yaml) in byok_operator::crd::generated()? {
        std::fs::write(dir.join(file), yaml)?;
    }
    Ok(())
}
