//! The `lockstep` command as a library: every subcommand's module, and
//! [`api`], the in-memory face (programs, tensors and receipts as values,
//! no files, no printing) that the Python package wraps. The binary
//! (`main.rs`) only parses flags and maps [`failure::Failure`] to an exit
//! code, so the command and the package fail with the same one-line
//! messages.

#![forbid(unsafe_code)]

pub mod api;
pub mod attest;
pub mod bench;
pub mod chain_check;
pub mod commands;
pub mod dispute;
pub mod evidence;
pub mod exec;
pub mod failure;
pub mod fleet_check;
pub mod import;
pub mod lineage;
pub mod load;
pub mod permit;
pub mod reference_file;
pub mod submit;
pub mod verify;

use std::path::PathBuf;

use clap::ValueEnum;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    Vulkan,
    Cpu,
}

#[derive(clap::Args)]
pub struct Target {
    /// Where to run.
    #[arg(long, value_enum, default_value = "vulkan")]
    backend: BackendKind,
    /// Vulkan device index (see `lockstep devices`); default: the preferred one.
    #[arg(long)]
    device: Option<usize>,
    /// Load the kernel bundle from this directory instead of the one built in.
    #[arg(long, value_name = "DIR")]
    bundle: Option<PathBuf>,
    /// TEST ONLY: open a Vulkan device whose float controls are not
    /// advertised (e.g. SwiftShader, no RoundingModeRTE) with the test-only
    /// portable bundle, to compare implementations. The run is
    /// NON-CONFORMING: every output says so, and it can never certify or
    /// serve (docs/float-model.md, "Implementations").
    #[arg(long)]
    cross_implementation_test: bool,
}

impl Target {
    /// Where [`api::run`] runs: `backend`, on Vulkan device `device`
    /// (default: the preferred one), with the built-in bundle.
    pub fn new(backend: BackendKind, device: Option<usize>) -> Target {
        Target {
            backend,
            device,
            bundle: None,
            cross_implementation_test: false,
        }
    }
}
