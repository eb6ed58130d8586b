//! Lockstep's wire protocol, with no sockets and no async (the quinn-proto
//! model): the daemon, the client, provisioning and hwtests drive these
//! types over whatever transport they have.
//!
//! - [`frame`]: the byte framing of a job stream and its bounded decoder.
//! - [`message`]: the versioned control messages (postcard).
//! - [`tensors`]: tensors streamed as bounded data chunks, checked against
//!   their announced SHA-256.
//! - [`admin`]: fleet enrollment and signed admin commands.
//! - [`attest`]: TPM attestation of a node (EK, AK, credential, quote).
//! - [`evidence`]: leaves and inputs of retained jobs, for spot checks
//!   and disputes.
//! - [`certify`]: signed certification runs and report installs.
//! - [`chain`]: the chain key's signatures and registrations (v5).
//! - [`receipt`]: the statement a node signs for every job.
//! - [`reference`]: job inputs given as other nodes' outputs, the
//!   submitter's fetch permissions, and the checks of both ends (v6).
//!
//! Wire format and rules: docs/protocol.md, "Wire protocol".

#![forbid(unsafe_code)]

pub mod admin;
pub mod attest;
pub mod certify;
pub mod chain;
pub mod evidence;
pub mod frame;
pub mod message;
pub mod receipt;
pub mod reference;
pub mod tensors;

pub use attest::{AttestChallenge, AttestEvidence, AttestIdentity, AttestTpm, QuotedPcr};
pub use certify::{
    report_sha256, verify_authorization, AuthError, Authorization, CertifyAction, CertifyChallenge,
    CertifyReply, CertifyRequest, CertifyStatement, InstallReport, Installed,
    CERTIFY_REQUEST_FORMAT,
};
pub use chain::{ChainFieldError, RegistrationSignature};
pub use evidence::{EvidenceAccess, InputRequest, LeafEvidence, LeafRequest};
pub use frame::{Frame, FrameDecoder, FrameError, FrameKind};
pub use lockstep_identity::KeyProtection;
pub use message::{
    DeviceSelector, DeviceStatus, Envelope, ErrorKind, JobError, JobRequest, JobResult, Message,
    MessageError, NodeStatus, TensorHeader, PROTOCOL_VERSION,
};
pub use receipt::{
    rfc3339, verify_chain_signature, DeviceRecord, Receipt, ReceiptError, ReferenceRecord,
    RECEIPT_FORMAT, RECEIPT_FORMAT_V1, RECEIPT_FORMAT_V2, RECEIPT_FORMAT_V3, RECEIPT_FORMAT_V4,
};
pub use reference::{
    check_fetch, check_reference, proof_message, OutputRequest, Permission, PermissionStatement,
    ProgramRequest, ReferenceError, ReferenceRefusal, SourceEvidence, SourceRequest,
    TensorReference, FETCH_EXPORTER_LABEL, PERMISSION_FORMAT,
};
pub use tensors::{header, tensor_chunks, TensorReceiver, TensorStreamError};
