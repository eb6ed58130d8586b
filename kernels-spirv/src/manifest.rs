//! The bundle manifest: what each pinned kernel is, how it was built, and the
//! SHA-256 of each of its binaries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the manifest's own format (not of the kernels).
pub const MANIFEST_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: u32,
    /// Monotonic bundle version; a node refuses to roll back to a lower one.
    pub version: u64,
    /// The compiler and flags the binaries were built with; informational,
    /// the hashes are what pins them.
    pub compiler: String,
    /// Kernels sorted by name.
    pub kernels: Vec<KernelSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSpec {
    pub name: String,
    /// GLSL source file, relative to `kernels-spirv/src/kernels/`.
    pub source: String,
    /// Preprocessor definitions passed to glslangValidator.
    pub defines: BTreeMap<String, String>,
    pub entry_point: String,
    pub workgroup_size: [u32; 3],
    /// Descriptor set 0, one storage buffer per binding, in binding order.
    pub bindings: Vec<BindingSpec>,
    /// 32-bit push constants in offset order.
    pub push_constants: Vec<PushConstantSpec>,
    /// One binary per float-controls variant.
    pub binaries: BTreeMap<Variant, BinarySpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingSpec {
    pub binding: u32,
    pub name: String,
    pub access: Access,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Read,
    Write,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConstantSpec {
    pub name: String,
    pub offset: u32,
    /// `u32` is the only type: floats travel as their bits.
    #[serde(rename = "type")]
    pub ty: PushConstantType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushConstantType {
    U32,
}

/// Float-controls variant of a binary. Every binary of the bundle declares
/// RoundingModeRTE and SignedZeroInfNanPreserve; DenormPreserve may only be
/// declared on a device that advertises it, so it lives in a second binary.
///
/// `Portable` exists only in the separate, test-only portable bundle
/// (`src/kernels/portable/`, [`BundleKind::Portable`]): the same sources
/// without RoundingModeRTE, for devices that do not advertise it, opened
/// only for non-conforming cross-implementation tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    Base,
    DenormPreserve,
    Portable,
}

impl Variant {
    /// The variants of the (conforming) bundle: every kernel has both.
    pub const ALL: [Variant; 2] = [Variant::Base, Variant::DenormPreserve];

    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Base => "base",
            Variant::DenormPreserve => "denorm_preserve",
            Variant::Portable => "portable",
        }
    }
}

/// Which kind of bundle a manifest describes, told by the variants its
/// kernels carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleKind {
    /// The bundle that serves and certifies: `base` and `denorm_preserve`.
    Conforming,
    /// The test-only bundle: `portable` binaries without RoundingModeRTE,
    /// loaded only by a device opened for a non-conforming
    /// cross-implementation test; it can never certify or serve.
    Portable,
}

impl BundleKind {
    /// The variants every kernel of a bundle of this kind has.
    pub fn variants(self) -> &'static [Variant] {
        match self {
            BundleKind::Conforming => &Variant::ALL,
            BundleKind::Portable => &[Variant::Portable],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BundleKind::Conforming => "conforming",
            BundleKind::Portable => "portable (test-only)",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinarySpec {
    /// File name, relative to `kernels-spirv/src/kernels/`.
    pub file: String,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
}

impl KernelSpec {
    /// Bytes of push constants the kernel expects.
    pub fn push_constant_bytes(&self) -> u32 {
        self.push_constants
            .iter()
            .map(|p| p.offset + 4)
            .max()
            .unwrap_or(0)
    }

    /// Index of a push constant by name, as a `u32` slot.
    pub fn push_constant_slot(&self, name: &str) -> Option<usize> {
        self.push_constants
            .iter()
            .find(|p| p.name == name)
            .map(|p| (p.offset / 4) as usize)
    }
}
