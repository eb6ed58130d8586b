//! Rebuilding and checking the pinned binaries with glslangValidator and
//! spirv-val (the `lockstep-bundle` tool and the pinned-bundle test).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::manifest::{KernelSpec, Manifest, Variant};
use crate::Bundle;

/// Where the committed bundle lives.
pub fn committed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/kernels")
}

/// The compiler version the committed binaries come from. glslang writes its
/// version into the SPIR-V header, so another version gives other bytes.
const GLSLANG_VERSION: &str = "12.0.0";

fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join("manifest.json");
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Recompiles every binary into `dir` and rewrites the manifest hashes.
pub fn build(dir: &Path) -> Result<()> {
    check_tools()?;
    let mut manifest = read_manifest(dir)?;
    for spec in &mut manifest.kernels {
        for variant in Variant::ALL {
            let file = spec.binaries[&variant].file.clone();
            let out = dir.join(&file);
            compile(dir, spec, variant, &out)?;
            let bytes = std::fs::read(&out)?;
            let entry = spec.binaries.get_mut(&variant).expect("variant present");
            entry.sha256 = hex::encode(Sha256::digest(&bytes));
            println!("{:<40} {}", file, entry.sha256);
        }
    }
    let pretty = lockstep_canonical_json::to_pretty_vec(&manifest)?;
    std::fs::write(dir.join("manifest.json"), pretty)?;
    let bundle = Bundle::from_dir(dir)?;
    println!("bundle id {}", bundle.id_hex());
    Ok(())
}

/// Fails unless fresh builds equal the committed binaries and the committed
/// bundle verifies.
pub fn check(dir: &Path) -> Result<()> {
    check_tools()?;
    let manifest = read_manifest(dir)?;
    let scratch = tempfile::tempdir()?;
    let mut differ = Vec::new();
    for spec in &manifest.kernels {
        for variant in Variant::ALL {
            let file = &spec.binaries[&variant].file;
            let fresh = scratch.path().join(file);
            compile(dir, spec, variant, &fresh)?;
            let committed = std::fs::read(dir.join(file)).unwrap_or_default();
            if std::fs::read(&fresh)? != committed {
                differ.push(file.clone());
            }
        }
    }
    if !differ.is_empty() {
        bail!(
            "fresh builds differ from the committed binaries: {}; run kernels-spirv/build.sh and commit the result",
            differ.join(", ")
        );
    }
    let text = std::fs::read(dir.join("manifest.json"))?;
    if text != lockstep_canonical_json::to_pretty_vec(&manifest)? {
        bail!("manifest.json is not in its normal form; run kernels-spirv/build.sh");
    }
    let bundle = Bundle::from_dir(dir).context("the committed bundle does not verify")?;
    println!(
        "bundle {} verified: {} kernels, fresh builds equal the committed binaries",
        bundle.id_hex(),
        manifest.kernels.len()
    );
    Ok(())
}

fn check_tools() -> Result<()> {
    let out = Command::new("glslangValidator")
        .arg("--version")
        .output()
        .context("glslangValidator not found: install Debian's glslang-tools (make test does)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains(&format!("glslang Khronos. {GLSLANG_VERSION}")) {
        bail!(
            "glslangValidator is not version {GLSLANG_VERSION} (it says {:?}); the pinned binaries \
             come from Debian bookworm's glslang-tools 12.0.0 and another version writes other bytes",
            text.lines().next().unwrap_or("")
        );
    }
    Command::new("spirv-val")
        .arg("--version")
        .output()
        .context("spirv-val not found: install Debian's spirv-tools (make test does)")?;
    Ok(())
}

fn compile(dir: &Path, spec: &KernelSpec, variant: Variant, out: &PathBuf) -> Result<()> {
    let mut cmd = Command::new("glslangValidator");
    // -V: SPIR-V for Vulkan. No -g (debug info would embed paths), no -O/-Os
    // (the optimiser rewrites a*b+c into Fma).
    cmd.current_dir(dir)
        .args(["-V", "--target-env", "vulkan1.2", "-S", "comp"])
        .arg("-e")
        .arg(&spec.entry_point);
    for (k, v) in &spec.defines {
        cmd.arg(format!("-D{k}={v}"));
    }
    if variant == Variant::DenormPreserve {
        cmd.arg("-DLOCKSTEP_DENORM_PRESERVE=1");
    }
    cmd.arg("-o").arg(out).arg(&spec.source);
    let result = cmd.output().context("running glslangValidator")?;
    if !result.status.success() {
        bail!(
            "glslangValidator failed on {} ({}): {}",
            spec.source,
            spec.name,
            String::from_utf8_lossy(&result.stdout).trim()
        );
    }
    let val = Command::new("spirv-val")
        .args(["--target-env", "vulkan1.2"])
        .arg(out)
        .output()
        .context("running spirv-val")?;
    if !val.status.success() {
        bail!(
            "spirv-val rejects {}: {}",
            out.display(),
            String::from_utf8_lossy(&val.stderr).trim()
        );
    }
    Ok(())
}
