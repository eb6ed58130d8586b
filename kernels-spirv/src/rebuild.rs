//! Rebuilding and checking the pinned binaries with glslangValidator and
//! spirv-val (the `lockstep-bundle` tool and the pinned-bundle test).

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::manifest::{BinarySpec, BundleKind, KernelSpec, Manifest, Variant};
use crate::{Bundle, BundleError};

/// The compiler version the committed binaries come from. glslang writes its
/// version into the SPIR-V header, so another version gives other bytes.
const GLSLANG_VERSION: &str = "12.0.0";

/// Why a rebuild or a check failed; each says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("{tool} not found: install Debian's {package} (make test does)")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },
    #[error(
        "glslangValidator is not version {GLSLANG_VERSION} (it says {found:?}); the pinned binaries \
         come from Debian bookworm's glslang-tools 12.0.0 and another version writes other bytes"
    )]
    WrongCompiler { found: String },
    #[error("glslangValidator failed on {source_file} (kernel {kernel}): {output}")]
    Compile {
        source_file: String,
        kernel: String,
        output: String,
    },
    #[error("spirv-val rejects {file}: {output}")]
    Invalid { file: String, output: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid manifest: {reason}")]
    Manifest { path: String, reason: String },
    #[error(
        "fresh builds differ from the committed binaries: {}; run kernels-spirv/build.sh and commit the result",
        .0.join(", ")
    )]
    Differ(Vec<String>),
    #[error("manifest.json (or portable/manifest.json) is not in its normal form; run kernels-spirv/build.sh")]
    NotNormalised,
    #[error("the bundle does not verify: {0}")]
    Bundle(#[from] BundleError),
}

/// What [`build`] wrote.
#[derive(Debug)]
pub struct Built {
    /// `(file, sha256)` of every binary, in manifest order (the portable
    /// bundle's last).
    pub binaries: Vec<(String, String)>,
    pub bundle_id: String,
    /// The id of the test-only portable bundle.
    pub portable_bundle_id: String,
}

/// Where the test-only portable bundle lives, inside the bundle directory.
pub const PORTABLE_DIR: &str = "portable";

/// The portable bundle's manifest, derived from the conforming one: the same
/// kernels (sources, interfaces, version), each with one `portable` binary
/// compiled with `-DLOCKSTEP_PORTABLE=1`; hashes are filled in by [`build`].
fn portable_manifest(manifest: &Manifest, hashes: &[String]) -> Manifest {
    let mut portable = manifest.clone();
    portable.compiler = format!(
        "{}; portable test-only variant: -DLOCKSTEP_PORTABLE=1 (no RoundingModeRTE)",
        manifest.compiler
    );
    for (i, spec) in portable.kernels.iter_mut().enumerate() {
        spec.binaries = [(
            Variant::Portable,
            BinarySpec {
                file: format!("{}.portable.spv", spec.name),
                sha256: hashes.get(i).cloned().unwrap_or_default(),
            },
        )]
        .into_iter()
        .collect();
    }
    portable
}

/// Where the committed bundle lives.
pub fn committed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/kernels")
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RebuildError + '_ {
    move |source| RebuildError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn read_manifest(dir: &Path) -> Result<Manifest, RebuildError> {
    let path = dir.join("manifest.json");
    let text = std::fs::read(&path).map_err(io_err(&path))?;
    serde_json::from_slice(&text).map_err(|e| RebuildError::Manifest {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn normal_form(manifest: &Manifest) -> Vec<u8> {
    lockstep_canonical_json::to_pretty_vec(manifest)
        .expect("a manifest holds only strings and integers")
}

/// Recompiles every binary into `dir` and rewrites the manifest hashes.
pub fn build(dir: &Path) -> Result<Built, RebuildError> {
    check_tools()?;
    let mut manifest = read_manifest(dir)?;
    let mut binaries = Vec::new();
    for spec in &mut manifest.kernels {
        for variant in Variant::ALL {
            let file = spec.binaries[&variant].file.clone();
            let out = dir.join(&file);
            compile(dir, spec, variant, &out)?;
            let bytes = std::fs::read(&out).map_err(io_err(&out))?;
            let entry = spec.binaries.get_mut(&variant).expect("variant present");
            entry.sha256 = hex::encode(Sha256::digest(&bytes));
            binaries.push((file, entry.sha256.clone()));
        }
    }
    let path = dir.join("manifest.json");
    std::fs::write(&path, normal_form(&manifest)).map_err(io_err(&path))?;
    let bundle = Bundle::from_dir(dir)?;
    bundle.require(BundleKind::Conforming)?;

    let portable_dir = dir.join(PORTABLE_DIR);
    std::fs::create_dir_all(&portable_dir).map_err(io_err(&portable_dir))?;
    let mut hashes = Vec::new();
    for spec in &portable_manifest(&manifest, &[]).kernels {
        let file = &spec.binaries[&Variant::Portable].file;
        let out = portable_dir.join(file);
        compile(dir, spec, Variant::Portable, &out)?;
        let bytes = std::fs::read(&out).map_err(io_err(&out))?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        binaries.push((format!("{PORTABLE_DIR}/{file}"), sha256.clone()));
        hashes.push(sha256);
    }
    let path = portable_dir.join("manifest.json");
    std::fs::write(&path, normal_form(&portable_manifest(&manifest, &hashes)))
        .map_err(io_err(&path))?;
    let portable = Bundle::from_dir(&portable_dir)?;
    portable.require(BundleKind::Portable)?;
    Ok(Built {
        binaries,
        bundle_id: bundle.id_hex(),
        portable_bundle_id: portable.id_hex(),
    })
}

/// Fails unless fresh builds equal the committed binaries and the committed
/// bundle verifies; returns the verified bundle.
pub fn check(dir: &Path) -> Result<Bundle, RebuildError> {
    check_tools()?;
    let manifest = read_manifest(dir)?;
    let scratch = tempfile::tempdir().map_err(io_err(Path::new("a scratch directory")))?;
    let mut differ = Vec::new();
    for spec in &manifest.kernels {
        for variant in Variant::ALL {
            let file = &spec.binaries[&variant].file;
            let fresh = scratch.path().join(file);
            compile(dir, spec, variant, &fresh)?;
            let committed = std::fs::read(dir.join(file)).unwrap_or_default();
            if std::fs::read(&fresh).map_err(io_err(&fresh))? != committed {
                differ.push(file.clone());
            }
        }
    }
    let portable_dir = dir.join(PORTABLE_DIR);
    let mut hashes = Vec::new();
    for spec in &portable_manifest(&manifest, &[]).kernels {
        let file = &spec.binaries[&Variant::Portable].file;
        let fresh = scratch.path().join(file);
        compile(dir, spec, Variant::Portable, &fresh)?;
        let fresh = std::fs::read(&fresh).map_err(io_err(&fresh))?;
        if std::fs::read(portable_dir.join(file)).unwrap_or_default() != fresh {
            differ.push(format!("{PORTABLE_DIR}/{file}"));
        }
        hashes.push(hex::encode(Sha256::digest(&fresh)));
    }
    if !differ.is_empty() {
        return Err(RebuildError::Differ(differ));
    }
    let path = dir.join("manifest.json");
    if std::fs::read(&path).map_err(io_err(&path))? != normal_form(&manifest) {
        return Err(RebuildError::NotNormalised);
    }
    // The portable manifest must be exactly the one derived from the
    // conforming manifest: same kernels, same interfaces, fresh hashes.
    let path = portable_dir.join("manifest.json");
    let derived = normal_form(&portable_manifest(&manifest, &hashes));
    if std::fs::read(&path).map_err(io_err(&path))? != derived {
        return Err(RebuildError::NotNormalised);
    }
    Bundle::from_dir(&portable_dir)?.require(BundleKind::Portable)?;
    let bundle = Bundle::from_dir(dir)?;
    bundle.require(BundleKind::Conforming)?;
    Ok(bundle)
}

fn check_tools() -> Result<(), RebuildError> {
    let out = Command::new("glslangValidator")
        .arg("--version")
        .output()
        .map_err(|_| RebuildError::ToolMissing {
            tool: "glslangValidator",
            package: "glslang-tools",
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains(&format!("glslang Khronos. {GLSLANG_VERSION}")) {
        return Err(RebuildError::WrongCompiler {
            found: text.lines().next().unwrap_or("").to_string(),
        });
    }
    Command::new("spirv-val")
        .arg("--version")
        .output()
        .map_err(|_| RebuildError::ToolMissing {
            tool: "spirv-val",
            package: "spirv-tools",
        })?;
    Ok(())
}

fn compile(
    dir: &Path,
    spec: &KernelSpec,
    variant: Variant,
    out: &Path,
) -> Result<(), RebuildError> {
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
    match variant {
        Variant::DenormPreserve => {
            cmd.arg("-DLOCKSTEP_DENORM_PRESERVE=1");
        }
        Variant::Portable => {
            cmd.arg("-DLOCKSTEP_PORTABLE=1");
        }
        Variant::Base => {}
    }
    cmd.arg("-o").arg(out).arg(&spec.source);
    let result = cmd.output().map_err(|_| RebuildError::ToolMissing {
        tool: "glslangValidator",
        package: "glslang-tools",
    })?;
    if !result.status.success() {
        return Err(RebuildError::Compile {
            source_file: spec.source.clone(),
            kernel: spec.name.clone(),
            output: String::from_utf8_lossy(&result.stdout).trim().to_string(),
        });
    }
    let val = Command::new("spirv-val")
        .args(["--target-env", "vulkan1.2"])
        .arg(out)
        .output()
        .map_err(|_| RebuildError::ToolMissing {
            tool: "spirv-val",
            package: "spirv-tools",
        })?;
    if !val.status.success() {
        return Err(RebuildError::Invalid {
            file: out.display().to_string(),
            output: String::from_utf8_lossy(&val.stderr).trim().to_string(),
        });
    }
    Ok(())
}
