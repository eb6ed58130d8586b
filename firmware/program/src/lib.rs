//! Lockstep programs: many ops in one job.
//!
//! - [`Program`] ([`model`]): named inputs, a body of [`Step`]s (ops and
//!   repeat blocks) and named outputs; JSON for people, postcard for the wire
//!   and the hash ([`Program::sha256`]).
//! - [`validate`]: every check that can be made before anything runs, with
//!   errors that name the step (`op 5.2 (matmul): ...`); gives a
//!   [`ValidatedProgram`] with parsed ops, shapes, liveness and peak memory.
//! - [`execute`]: runs a validated program on any [`lockstep_backend::Backend`],
//!   freeing tensors after their last use and recording the [`Trace`].
//! - [`trace`]: the RFC 6962 Merkle commitment over the executed ops'
//!   output digests, incremental, with inclusion proofs.
//!
//! The formats and the exact hash construction: docs/protocol.md.

#![forbid(unsafe_code)]

mod exec;
pub mod fault;
pub mod model;
mod resident;
pub mod trace;
mod validate;

/// Whether this build can corrupt op outputs on purpose (the test-only
/// `fault-injection` feature); a node refuses `--inject-fault` otherwise.
pub const FAULT_INJECTION: bool = cfg!(feature = "fault-injection");

pub use exec::{
    execute, ExecError, ExecOptions, ExecReport, Observer, OpProfile, Trace, TraceEntry,
};
pub use model::{DecodeError, OpStep, Program, RepeatStep, Step, TensorDecl, PROGRAM_VERSION};
pub use validate::{
    check_name, validate, CarriedShape, NamedShape, OpPath, ProgramError, Site, StepProblem,
    ValidateOptions, ValidatedOp, ValidatedProgram,
};
