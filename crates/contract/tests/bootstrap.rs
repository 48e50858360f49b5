//! The checked-in generated code must be what `proto/` generates today. Run with
//! `TESSERA_REGENERATE_PROTO=1` to rewrite `src/gen` after editing a .proto file.

use std::path::{Path, PathBuf};

const PROTOS: &[&str] = &["istio/v1/auth/ca.proto", "tessera/v1/push.proto"];

#[test]
fn generated_code_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fds = protox::compile(PROTOS, [root.join("proto")]).expect("the .proto files compile");
    let out = tempfile::tempdir().unwrap();
    tonic_prost_build::configure()
        .build_transport(false)
        .out_dir(out.path())
        .compile_fds(fds)
        .expect("code generation");
    let gen_dir = root.join("src/gen");
    let regenerate = std::env::var_os("TESSERA_REGENERATE_PROTO").is_some();
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(out.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        let fresh = std::fs::read_to_string(&path).unwrap();
        let checked_in: PathBuf = gen_dir.join(&name);
        if regenerate {
            std::fs::write(&checked_in, &fresh).unwrap();
        } else if std::fs::read_to_string(&checked_in).ok().as_deref() != Some(fresh.as_str()) {
            stale.push(checked_in.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "generated code is stale: {stale:?}; rerun with TESSERA_REGENERATE_PROTO=1"
    );
}
