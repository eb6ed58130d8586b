//! `lockstep-bundle`: rebuilds and checks the pinned kernel bundle.
//!
//! - `lockstep-bundle build`: compiles every kernel variant named in
//!   `src/kernels/manifest.json` with glslangValidator (no optimiser, no
//!   debug info), validates it with spirv-val, writes the `.spv` beside its
//!   source and records its SHA-256 in the manifest.
//! - `lockstep-bundle check`: compiles into a scratch directory and fails if
//!   any fresh binary differs from the committed one, or if the committed
//!   manifest, binaries and float-model check disagree.
//!
//! Both also cover the test-only portable bundle in `src/kernels/portable/`
//! (the same kernels compiled with `-DLOCKSTEP_PORTABLE=1`, without
//! RoundingModeRTE; its manifest is derived from the conforming one).
//!
//! `kernels-spirv/build.sh` is the front door; CI runs `check`.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use lockstep_kernels::rebuild::{build, check, committed_dir};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = committed_dir();
    let result = match args.first().map(String::as_str) {
        Some("build") => build(&dir).map(|built| {
            for (file, sha256) in &built.binaries {
                println!("{file:<40} {sha256}");
            }
            println!("bundle id {}", built.bundle_id);
            println!(
                "portable (test-only) bundle id {}",
                built.portable_bundle_id
            );
        }),
        Some("check") => check(&dir).map(|bundle| {
            println!(
                "bundle {} verified: {} kernels, fresh builds equal the committed binaries",
                bundle.id_hex(),
                bundle.kernels().count()
            );
        }),
        _ => {
            eprintln!("usage: lockstep-bundle build|check");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lockstep-bundle: {e}");
            ExitCode::FAILURE
        }
    }
}
