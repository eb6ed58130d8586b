//! A kernel bundle: a manifest plus the binaries it pins, verified.
//!
//! A [`Bundle`] can only be built through [`Bundle::from_parts`], which checks
//! every binary's SHA-256 against the manifest and every binary against the
//! float model before anything can reach a driver. The bundle id is the
//! SHA-256 of the manifest's canonical JSON bytes; since the manifest holds
//! every binary's hash, the id commits to the whole bundle.

use std::collections::BTreeMap;
use std::path::Path;

use lockstep_limits::{MAX_KERNELS, MAX_MANIFEST_BYTES, MAX_SPIRV_BYTES};
use sha2::{Digest, Sha256};

use crate::manifest::{BundleKind, KernelSpec, Manifest, Variant, MANIFEST_FORMAT};
use crate::spirv::{self, SpirvError};

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

/// Why a bundle was refused. Every variant names what to do next.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle manifest is not valid: {0}")]
    Manifest(String),
    #[error("bundle file {file} cannot be read: {reason}")]
    Read { file: String, reason: String },
    #[error(
        "kernel '{kernel}' binary {file} has SHA-256 {found} but the manifest pins {expected}: \
         refusing it; restore the file or rebuild the bundle with kernels-spirv/build.sh"
    )]
    HashMismatch {
        kernel: String,
        file: String,
        expected: String,
        found: String,
    },
    #[error("kernel '{kernel}' binary {file} breaks the float model: {source}")]
    FloatModel {
        kernel: String,
        file: String,
        #[source]
        source: SpirvError,
    },
    #[error(
        "kernel '{kernel}': {what} in the manifest is {manifest} but the binary says {binary}"
    )]
    Disagrees {
        kernel: String,
        what: &'static str,
        manifest: String,
        binary: String,
    },
    #[error(
        "this is the {found} bundle, but {wanted} was asked for: a conforming device loads only \
         the conforming bundle, and the portable one is opened only for non-conforming \
         cross-implementation tests (docs/float-model.md)"
    )]
    WrongKind {
        found: &'static str,
        wanted: &'static str,
    },
}

/// A verified kernel: its spec and one SPIR-V module per variant.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub spec: KernelSpec,
    spirv: BTreeMap<Variant, Vec<u32>>,
}

impl Kernel {
    /// The SPIR-V words of one variant of its bundle's kind (every kernel
    /// has each of them; see [`Bundle::kind`]).
    pub fn spirv(&self, variant: Variant) -> &[u32] {
        &self.spirv[&variant]
    }
}

/// A verified bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    manifest: Manifest,
    kind: BundleKind,
    id: [u8; 32],
    kernels: BTreeMap<String, Kernel>,
}

impl Bundle {
    /// The bundle built into this binary from `kernels-spirv/`.
    pub fn embedded() -> Result<Bundle, BundleError> {
        Bundle::from_embedded(
            include_bytes!("kernels/manifest.json"),
            EMBEDDED_FILES,
            BundleKind::Conforming,
        )
    }

    /// The test-only portable bundle built into this binary from
    /// `kernels-spirv/src/kernels/portable/`: the same kernels without
    /// RoundingModeRTE, for non-conforming cross-implementation tests only.
    pub fn embedded_portable() -> Result<Bundle, BundleError> {
        Bundle::from_embedded(
            include_bytes!("kernels/portable/manifest.json"),
            EMBEDDED_PORTABLE_FILES,
            BundleKind::Portable,
        )
    }

    /// A bundle from a manifest and binaries built into this binary, which
    /// must be of `kind`; every hash is checked as for any other bundle.
    fn from_embedded(
        manifest: &[u8],
        files: &[(&str, &[u8])],
        kind: BundleKind,
    ) -> Result<Bundle, BundleError> {
        let bundle = Bundle::from_parts(manifest, |file| {
            files
                .iter()
                .find(|(name, _)| *name == file)
                .map(|(_, bytes)| bytes.to_vec())
                .ok_or_else(|| "not embedded in this build".to_string())
        })?;
        bundle.require(kind)?;
        Ok(bundle)
    }

    /// Fails unless this bundle is of the given kind.
    pub fn require(&self, kind: BundleKind) -> Result<(), BundleError> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(BundleError::WrongKind {
                found: self.kind.as_str(),
                wanted: kind.as_str(),
            })
        }
    }

    /// A bundle from a directory holding `manifest.json` and the binaries.
    pub fn from_dir(dir: &Path) -> Result<Bundle, BundleError> {
        let manifest_path = dir.join("manifest.json");
        let manifest = read_bounded(&manifest_path, MAX_MANIFEST_BYTES)?;
        Bundle::from_parts(&manifest, |file| {
            read_bounded(&dir.join(file), MAX_SPIRV_BYTES).map_err(|e| e.to_string())
        })
    }

    /// Verifies a manifest and the binaries `fetch` returns for its file names.
    pub fn from_parts(
        manifest_bytes: &[u8],
        mut fetch: impl FnMut(&str) -> Result<Vec<u8>, String>,
    ) -> Result<Bundle, BundleError> {
        if manifest_bytes.len() > MAX_MANIFEST_BYTES {
            return Err(BundleError::Manifest(format!(
                "{} bytes exceeds the {MAX_MANIFEST_BYTES}-byte bound",
                manifest_bytes.len()
            )));
        }
        let manifest: Manifest = serde_json::from_slice(manifest_bytes)
            .map_err(|e| BundleError::Manifest(e.to_string()))?;
        let kind = validate_manifest(&manifest)?;
        let canonical = lockstep_canonical_json::to_vec(&manifest)
            .map_err(|e| BundleError::Manifest(e.to_string()))?;
        let id: [u8; 32] = Sha256::digest(&canonical).into();

        let mut kernels = BTreeMap::new();
        for spec in &manifest.kernels {
            let mut modules = BTreeMap::new();
            for &variant in kind.variants() {
                let binary = &spec.binaries[&variant];
                let bytes = fetch(&binary.file).map_err(|reason| BundleError::Read {
                    file: binary.file.clone(),
                    reason,
                })?;
                let found = hex::encode(Sha256::digest(&bytes));
                if found != binary.sha256 {
                    return Err(BundleError::HashMismatch {
                        kernel: spec.name.clone(),
                        file: binary.file.clone(),
                        expected: binary.sha256.clone(),
                        found,
                    });
                }
                let float_model = |source| BundleError::FloatModel {
                    kernel: spec.name.clone(),
                    file: binary.file.clone(),
                    source,
                };
                let words = spirv::words(&bytes).map_err(float_model)?;
                let facts = spirv::check(&words, variant).map_err(float_model)?;
                if facts.local_size != spec.workgroup_size {
                    return Err(BundleError::Disagrees {
                        kernel: spec.name.clone(),
                        what: "workgroup_size",
                        manifest: format!("{:?}", spec.workgroup_size),
                        binary: format!("{:?}", facts.local_size),
                    });
                }
                if facts.entry_point != spec.entry_point {
                    return Err(BundleError::Disagrees {
                        kernel: spec.name.clone(),
                        what: "entry_point",
                        manifest: spec.entry_point.clone(),
                        binary: facts.entry_point,
                    });
                }
                modules.insert(variant, words);
            }
            kernels.insert(
                spec.name.clone(),
                Kernel {
                    spec: spec.clone(),
                    spirv: modules,
                },
            );
        }
        Ok(Bundle {
            manifest,
            kind,
            id,
            kernels,
        })
    }

    /// Conforming, or the test-only portable bundle.
    pub fn kind(&self) -> BundleKind {
        self.kind
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// SHA-256 of the manifest's canonical JSON bytes.
    pub fn id(&self) -> [u8; 32] {
        self.id
    }

    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    pub fn kernel(&self, name: &str) -> Option<&Kernel> {
        self.kernels.get(name)
    }

    pub fn kernels(&self) -> impl Iterator<Item = &Kernel> {
        self.kernels.values()
    }
}

fn validate_manifest(m: &Manifest) -> Result<BundleKind, BundleError> {
    let bad = |msg: String| Err(BundleError::Manifest(msg));
    if m.format != MANIFEST_FORMAT {
        return bad(format!(
            "format {} is not {MANIFEST_FORMAT}; this runtime reads format {MANIFEST_FORMAT} only",
            m.format
        ));
    }
    if m.kernels.is_empty() || m.kernels.len() > MAX_KERNELS {
        return bad(format!(
            "{} kernels; a bundle has 1 to {MAX_KERNELS}",
            m.kernels.len()
        ));
    }
    for pair in m.kernels.windows(2) {
        if pair[0].name >= pair[1].name {
            return bad(format!(
                "kernels must be sorted by name without duplicates ('{}' then '{}')",
                pair[0].name, pair[1].name
            ));
        }
    }
    // The first kernel's variants tell the kind; every kernel must match.
    let kind = if m.kernels[0].binaries.contains_key(&Variant::Portable) {
        BundleKind::Portable
    } else {
        BundleKind::Conforming
    };
    for k in &m.kernels {
        if k.binaries.len() != kind.variants().len() {
            return bad(format!(
                "kernel '{}' has binaries {:?}; every kernel of a {} bundle has exactly {:?}",
                k.name,
                k.binaries.keys().map(|v| v.as_str()).collect::<Vec<_>>(),
                kind.as_str(),
                kind.variants()
                    .iter()
                    .map(|v| v.as_str())
                    .collect::<Vec<_>>()
            ));
        }
        for &variant in kind.variants() {
            let Some(b) = k.binaries.get(&variant) else {
                return bad(format!(
                    "kernel '{}' has no {} binary",
                    k.name,
                    variant.as_str()
                ));
            };
            let plain_name = !b.file.is_empty()
                && b.file
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
                && !b.file.starts_with('.');
            if !plain_name {
                return bad(format!(
                    "kernel '{}' names binary {:?}; file names are plain names in the bundle directory",
                    k.name, b.file
                ));
            }
            if b.sha256.len() != 64
                || !b
                    .sha256
                    .bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            {
                return bad(format!(
                    "kernel '{}' {} sha256 {:?} is not 64 lower-case hex digits",
                    k.name,
                    variant.as_str(),
                    b.sha256
                ));
            }
        }
        for (i, binding) in k.bindings.iter().enumerate() {
            if binding.binding as usize != i {
                return bad(format!(
                    "kernel '{}' bindings must be numbered 0.. in order",
                    k.name
                ));
            }
        }
        for (i, pc) in k.push_constants.iter().enumerate() {
            if pc.offset as usize != 4 * i {
                return bad(format!(
                    "kernel '{}' push constant '{}' at offset {}; they are packed u32s from offset 0",
                    k.name, pc.name, pc.offset
                ));
            }
        }
    }
    Ok(kind)
}

fn read_bounded(path: &Path, bound: usize) -> Result<Vec<u8>, BundleError> {
    let read_err = |reason: String| BundleError::Read {
        file: path.display().to_string(),
        reason,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| read_err(e.to_string()))?
        .len();
    if len > bound as u64 {
        return Err(read_err(format!(
            "{len} bytes exceeds the {bound}-byte bound"
        )));
    }
    std::fs::read(path).map_err(|e| read_err(e.to_string()))
}
