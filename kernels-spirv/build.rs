//! Embeds the committed bundle (manifest + every binary it names) into the
//! crate, so a `lockstep` binary carries exactly the kernels it was built
//! with. The hashes are still checked at load time, like any other bundle's.

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut code = embed(root, "src/kernels", "EMBEDDED_FILES");
    // The test-only portable bundle (no RoundingModeRTE), for
    // cross-implementation tests; Bundle::embedded_portable.
    code.push_str(&embed(
        root,
        "src/kernels/portable",
        "EMBEDDED_PORTABLE_FILES",
    ));
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("embedded.rs");
    std::fs::write(out, code).unwrap();
}

fn embed(root: &Path, dir: &str, name: &str) -> String {
    let manifest_path = root.join(dir).join("manifest.json");
    println!("cargo:rerun-if-changed={}", manifest_path.display());
    let text = std::fs::read_to_string(&manifest_path)
        .unwrap_or_else(|e| panic!("read {}: {e}", manifest_path.display()));
    let manifest: serde_json::Value = serde_json::from_str(&text).expect("parse manifest.json");
    let mut files = Vec::new();
    for kernel in manifest["kernels"].as_array().expect("kernels array") {
        for binary in kernel["binaries"]
            .as_object()
            .expect("binaries object")
            .values()
        {
            files.push(binary["file"].as_str().expect("file name").to_string());
        }
    }
    files.sort();
    let mut code = format!("pub(crate) static {name}: &[(&str, &[u8])] = &[\n");
    for f in &files {
        let path = root.join(dir).join(f);
        println!("cargo:rerun-if-changed={}", path.display());
        if path.exists() {
            writeln!(
                code,
                "    ({f:?}, include_bytes!({:?})),",
                path.display().to_string()
            )
            .unwrap();
        } else {
            // Only while bootstrapping a new kernel: the bundle then fails
            // its hash check at load time, with the file named.
            println!("cargo:warning=kernel binary {f} is missing; run kernels-spirv/build.sh");
            writeln!(code, "    ({f:?}, &[]),").unwrap();
        }
    }
    code.push_str("];\n");
    code
}
