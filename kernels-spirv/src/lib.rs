//! Lockstep's pinned kernel bundle and its CPU reference.
//!
//! - `src/kernels/*.comp`: the GLSL sources, with the pinned `.spv` binaries
//!   committed beside them and `src/kernels/*.rs` the CPU reference of each
//!   ([`reference`]).
//! - `manifest.json`: every kernel's interface and binary hashes; see
//!   [`manifest`].
//! - [`Bundle`]: a manifest with its binaries, verified by hash and by a
//!   static float-model check of the SPIR-V ([`spirv`]).
//!
//! `kernels-spirv/build.sh` rebuilds the binaries with glslangValidator;
//! nothing is ever compiled at run time.

#![forbid(unsafe_code)]

pub mod bundle;
pub mod manifest;
pub mod rebuild;
pub mod spirv;

#[path = "kernels/mod.rs"]
pub mod reference;

pub use bundle::{Bundle, BundleError, Kernel};
pub use manifest::{BundleKind, KernelSpec, Manifest, Variant};
