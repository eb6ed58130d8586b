//! Control messages. Every control frame is one [`Envelope`] in postcard;
//! its `version` comes first so a node can answer a newer client with a
//! clear error instead of a decoding failure.

use lockstep_limits::{MAX_JOB_TENSORS, MAX_RANK};
use serde::{Deserialize, Serialize};

use crate::frame::Frame;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 7;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u16,
    pub message: Message,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Client → node: report status.
    StatusRequest,
    /// Client → node: run a program; the inputs' data chunks follow, in
    /// order.
    Submit(JobRequest),
    /// Node → client.
    Status(NodeStatus),
    /// Node → client: the job queue is full; nothing was kept.
    Busy { retry_after_ms: u32 },
    /// Node → client: the job was refused or failed; nothing was kept.
    Rejected(JobError),
    /// Node → client: the job's outputs (their data chunks follow, in
    /// order) and its signed receipt.
    Done(JobResult),
    /// Fleet → node: start an admin session (enrollment, bundle push).
    AdminHello(crate::admin::AdminHello),
    /// Node → fleet: its info and a session nonce, signed by the device key.
    AdminChallenge(crate::admin::AdminChallenge),
    /// Fleet → node: a command signed by an operator key; a bundle's files
    /// follow as data chunks.
    AdminCommand(crate::admin::AdminCommand),
    /// Node → fleet: the command's outcome.
    AdminReply(crate::admin::AdminReply),
    /// Client → node: one leaf of a retained job's trace (evidence.rs).
    FetchLeaf(crate::evidence::LeafRequest),
    /// Node → client: the leaf; its tensor's data chunks follow if sent.
    Leaf(crate::evidence::LeafEvidence),
    /// Client → node: one retained input of a job.
    FetchInput(crate::evidence::InputRequest),
    /// Node → client: the input's header; its data chunks follow.
    Input(TensorHeader),
    /// Certifier or operator → node, after a `CertifyChallenge`: run the
    /// certification suite on this device (a signed request).
    CertifyRequest(crate::certify::CertifyRequest),
    /// Node → certifier: the report, signed by the device key.
    CertifyReport(crate::certify::CertifyReply),
    /// Certifier or operator → node, after a `CertifyChallenge`: install a
    /// report signed by a certifier (a signed request).
    InstallReport(crate::certify::InstallReport),
    /// Node → certifier: the node's certification after an install.
    Installed(crate::certify::Installed),
    /// Certifier or operator → node: start a certification session (a
    /// suite run or a report install); the node answers `CertifyChallenge`.
    CertifyHello,
    /// Node → requester: the nonce the session's request must be signed
    /// over.
    CertifyChallenge(crate::certify::CertifyChallenge),
    /// Client → node: start an attestation (attest.rs).
    AttestHello,
    /// Node → client: its TPM's EK, EK certificate and a fresh AK.
    AttestIdentity(crate::attest::AttestIdentity),
    /// Client → node: a nonce and a credential for the EK naming the AK.
    AttestChallenge(crate::attest::AttestChallenge),
    /// Node → client: the activated secret, a quote over the nonce and
    /// the node key, and the quoted PCRs' values.
    AttestEvidence(crate::attest::AttestEvidence),
    /// Consumer node → producer node: a job's output, under the submitter's
    /// permission (reference.rs).
    FetchOutput(crate::reference::OutputRequest),
    /// Producer → consumer: the output's header; its data chunks follow.
    Output(TensorHeader),
    /// Client → node: where a job's referenced input came from (lineage).
    FetchSource(crate::reference::SourceRequest),
    /// Node → client: the reference it was given, less the permission.
    Source(crate::reference::SourceEvidence),
    /// Client → node: a retained job's program (lineage re-execution).
    FetchProgram(crate::reference::ProgramRequest),
    /// Node → client: the program's canonical postcard bytes.
    Program(Vec<u8>),
}

/// One named tensor's shape and the SHA-256 of its canonical `.npy` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorHeader {
    pub name: String,
    pub shape: Vec<u64>,
    pub sha256: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRequest {
    /// Chosen by the client; echoed in the receipt.
    pub job_id: [u8; 16],
    /// The program's canonical postcard bytes (a single op is a one-step
    /// program).
    pub program: Vec<u8>,
    /// The inputs sent as data, in the order their chunks follow.
    pub inputs: Vec<TensorHeader>,
    /// The inputs given as other nodes' outputs: the node fetches them
    /// (docs/protocol.md, "References"). Every declared input is in
    /// exactly one of `inputs` and `references`.
    pub references: Vec<crate::reference::TensorReference>,
    /// The submitter's minisign public key (base64): the receipt records
    /// it, and only it may permit other nodes to fetch the outputs.
    pub submitter: Option<String>,
    /// The device to run on; `None`: the node picks a serving device with
    /// the shortest queue. v7.
    pub device: Option<DeviceSelector>,
}

/// Which of a node's devices a job asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceSelector {
    /// By index, as `lockstep status` lists them.
    Index(u32),
    /// By `VkPhysicalDeviceIDProperties::deviceUUID`: the first serving
    /// device with that UUID.
    Uuid([u8; 16]),
}

impl DeviceSelector {
    /// `N` (an index) or 32 hex digits (a UUID, dashes allowed).
    pub fn parse(text: &str) -> Result<DeviceSelector, String> {
        let t = text.trim();
        if let Ok(i) = t.parse::<u32>() {
            return Ok(DeviceSelector::Index(i));
        }
        let digits: String = t.chars().filter(|c| *c != '-').collect();
        let mut uuid = [0u8; 16];
        match hex::decode_to_slice(&digits, &mut uuid) {
            Ok(()) => Ok(DeviceSelector::Uuid(uuid)),
            Err(_) => Err(format!(
                "device {text:?} is neither an index (0, 1, ...) nor a 32-hex-digit UUID; see `lockstep status`"
            )),
        }
    }
}

impl std::fmt::Display for DeviceSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSelector::Index(i) => write!(f, "device {i}"),
            DeviceSelector::Uuid(u) => write!(f, "device {}", hex::encode(u)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    pub outputs: Vec<TensorHeader>,
    /// The receipt's canonical JSON bytes, exactly as signed.
    pub receipt: Vec<u8>,
    /// The minisign signature file of `receipt`.
    pub signature: String,
    /// `0x` + 130 hex: the chain key's EIP-712 `Receipt(bytes32
    /// receiptDigest)` signature (receipt domain), where `receiptDigest` is
    /// the SHA-256 of `receipt` ([`crate::Receipt::digest`]).
    pub chain_signature: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The stream did not follow the framing or message rules.
    BadFrame,
    UnsupportedVersion,
    /// The program failed validation.
    InvalidProgram,
    /// An input is missing, misnamed, the wrong shape, or fails its hash.
    BadInput,
    /// Over a bound of this node.
    TooLarge,
    /// The job ran past the node's time limit.
    Timeout,
    /// The node holds no passing certification report for its device and
    /// bundle (and does not run with --uncertified); the message says why.
    Uncertified,
    /// The node failed (device lost, ...); the job may be retried.
    Internal,
    /// Evidence was asked for a job the node does not hold (never run
    /// here, or evicted after its retention window or for space).
    NotRetained,
    /// Over a budget of this node *now* (connections, memory, job slots,
    /// evidence turns): nothing was kept; the same request may succeed
    /// later. Sent on the wire as [`Message::Busy`].
    Busy,
    /// The requester may not do this: it did not prove what the request
    /// needs (a job's receipt for its evidence; for a certification run or
    /// report install, a signature by an operator or trusted certifier of
    /// this node over the session's nonce); the message says what to do.
    Unauthorized,
    /// The node cannot attest: it has no TPM, or its device key is a file
    /// key (nothing ties it to the TPM); the message says which.
    NotAttestable,
    /// A referenced input was refused or could not be fetched; the
    /// refusal says which check failed, the message names the input.
    Reference(crate::reference::ReferenceRefusal),
    /// The device running the job was lost (`VK_ERROR_DEVICE_LOST`): the
    /// job failed and the device is out of service; the node's other
    /// devices still serve, so the job may be resubmitted.
    DeviceLost,
    /// The job named a device this node does not have, or one out of
    /// service; the message lists the serving ones.
    NoSuchDevice,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    pub kind: ErrorKind,
    /// One line, saying what to do next.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: String,
    pub device: String,
    pub bundle_id: String,
    pub certified: bool,
    /// One line: who certified the node, or why it is not certified.
    pub certification: String,
    pub queue_depth: u32,
    pub queue_bound: u32,
    pub jobs_done: u64,
    pub jobs_failed: u64,
    pub uptime_s: u64,
    /// How the device key is protected (TPM-sealed or a file).
    pub key_protection: lockstep_identity::KeyProtection,
    /// The node's chain key address (EIP-55 `0x…`).
    pub chain_address: String,
    /// Each device, in index order (v7). The fields above sum or summarise
    /// them: `queue_depth` and the job counts are totals, `certified` says
    /// whether any device serves.
    pub devices: Vec<DeviceStatus>,
}

/// One device of a node, as `lockstep status` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    pub index: u32,
    pub name: String,
    /// 32 lower-case hex digits.
    pub uuid: String,
    /// Whether this device takes jobs now: certified (or the node runs
    /// `--uncertified`) and not lost.
    pub serving: bool,
    pub certified: bool,
    /// One line: who certified the device, or why it is not certified.
    pub certification: String,
    pub queue_depth: u32,
    pub queue_bound: u32,
    pub jobs_done: u64,
    pub jobs_failed: u64,
    /// Why the device is out of service (lost, failed a bundle's
    /// self-test), if it is.
    pub problem: Option<String>,
}

/// Why a control frame is not a message this node accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("control frame is not a valid message: {0}")]
    Decode(String),
    #[error("peer speaks protocol version {0}; this node speaks {PROTOCOL_VERSION}")]
    Version(u16),
    #[error("{0}")]
    Bound(String),
}

impl MessageError {
    /// The kind a node answers a peer with for this decoding failure.
    pub fn error_kind(&self) -> ErrorKind {
        match self {
            MessageError::Version(_) => ErrorKind::UnsupportedVersion,
            MessageError::Bound(_) => ErrorKind::TooLarge,
            MessageError::Decode(_) => ErrorKind::BadFrame,
        }
    }
}

impl Message {
    /// The control frame carrying this message.
    pub fn to_frame(&self) -> Frame {
        let envelope = Envelope {
            version: PROTOCOL_VERSION,
            message: self.clone(),
        };
        Frame::Control(postcard::to_stdvec(&envelope).expect("messages always serialise"))
    }

    /// Decodes a control frame's payload, checking version and bounds.
    pub fn decode(payload: &[u8]) -> Result<Message, MessageError> {
        // The version is the first field: read it alone first, so a future
        // layout still gets a version error rather than a decode error.
        let (version, _) = postcard::take_from_bytes::<u16>(payload)
            .map_err(|e| MessageError::Decode(e.to_string()))?;
        if version != PROTOCOL_VERSION {
            return Err(MessageError::Version(version));
        }
        let (envelope, rest) = postcard::take_from_bytes::<Envelope>(payload)
            .map_err(|e| MessageError::Decode(e.to_string()))?;
        if !rest.is_empty() {
            return Err(MessageError::Decode(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        check_bounds(&envelope.message)?;
        Ok(envelope.message)
    }
}

fn check_headers(headers: &[TensorHeader]) -> Result<(), MessageError> {
    if headers.len() > MAX_JOB_TENSORS {
        return Err(MessageError::Bound(format!(
            "{} tensors; a job carries at most {MAX_JOB_TENSORS}",
            headers.len()
        )));
    }
    for h in headers {
        if h.shape.len() > MAX_RANK {
            return Err(MessageError::Bound(format!(
                "tensor '{}' has {} dimensions; at most {MAX_RANK}",
                h.name,
                h.shape.len()
            )));
        }
    }
    Ok(())
}

fn check_bounds(m: &Message) -> Result<(), MessageError> {
    match m {
        Message::Submit(r) => {
            if r.inputs.len() + r.references.len() > MAX_JOB_TENSORS {
                return Err(MessageError::Bound(format!(
                    "{} inputs and {} references; a job carries at most {MAX_JOB_TENSORS}",
                    r.inputs.len(),
                    r.references.len()
                )));
            }
            if let Some(s) = &r.submitter {
                if s.len() > lockstep_limits::MAX_PUBLIC_KEY_TEXT_BYTES {
                    return Err(MessageError::Bound(format!(
                        "a submitter key of {} bytes; at most {}",
                        s.len(),
                        lockstep_limits::MAX_PUBLIC_KEY_TEXT_BYTES
                    )));
                }
            }
            for reference in &r.references {
                crate::reference::check_reference_bounds(reference)?;
            }
            check_headers(&r.inputs)
        }
        Message::Done(r) => {
            if r.chain_signature.len() > crate::chain::CHAIN_SIGNATURE_TEXT_LEN {
                return Err(MessageError::Bound(format!(
                    "chain signature of {} characters; it has {}",
                    r.chain_signature.len(),
                    crate::chain::CHAIN_SIGNATURE_TEXT_LEN
                )));
            }
            check_headers(&r.outputs)
        }
        Message::Status(s) if s.chain_address.len() > crate::chain::ADDRESS_TEXT_LEN => {
            Err(MessageError::Bound(format!(
                "chain address of {} characters; it has {}",
                s.chain_address.len(),
                crate::chain::ADDRESS_TEXT_LEN
            )))
        }
        Message::AdminChallenge(c)
            if c.info.chain_address.len() > crate::chain::ADDRESS_TEXT_LEN =>
        {
            Err(MessageError::Bound(format!(
                "chain address of {} characters; it has {}",
                c.info.chain_address.len(),
                crate::chain::ADDRESS_TEXT_LEN
            )))
        }
        Message::AdminReply(r) => crate::admin::check_reply(r).map_err(MessageError::Bound),
        Message::AdminCommand(c) => crate::admin::check_command(c).map_err(MessageError::Bound),
        Message::Leaf(e) => {
            crate::evidence::check_leaf(e)?;
            check_headers(e.tensor.as_slice())
        }
        Message::FetchInput(r) => {
            crate::evidence::check_name(&r.name)?;
            crate::evidence::check_access(&r.access)
        }
        Message::FetchLeaf(r) => crate::evidence::check_access(&r.access),
        Message::Input(h) | Message::Output(h) => check_headers(std::slice::from_ref(h)),
        Message::FetchOutput(r) => crate::reference::check_output_request(r),
        Message::FetchSource(r) => {
            crate::evidence::check_name(&r.input)?;
            crate::evidence::check_access(&r.access)
        }
        Message::Source(e) => crate::reference::check_source(e),
        Message::FetchProgram(r) => crate::evidence::check_access(&r.access),
        Message::Program(p) if p.len() > lockstep_limits::MAX_PROGRAM_BYTES => {
            Err(MessageError::Bound(format!(
                "a program of {} bytes; at most {}",
                p.len(),
                lockstep_limits::MAX_PROGRAM_BYTES
            )))
        }
        Message::CertifyRequest(r) => crate::certify::check_request(r).map_err(MessageError::Bound),
        Message::CertifyReport(r) => crate::certify::check_reply(r).map_err(MessageError::Bound),
        Message::InstallReport(r) => crate::certify::check_install(r).map_err(MessageError::Bound),
        Message::AttestIdentity(m) => crate::attest::check_identity(m).map_err(MessageError::Bound),
        Message::AttestChallenge(m) => {
            crate::attest::check_challenge(m).map_err(MessageError::Bound)
        }
        Message::AttestEvidence(m) => crate::attest::check_evidence(m).map_err(MessageError::Bound),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let m = Message::Submit(JobRequest {
            job_id: [3; 16],
            program: vec![1, 2, 3],
            inputs: vec![TensorHeader {
                name: "x".into(),
                shape: vec![2, 3],
                sha256: [9; 32],
            }],
            references: vec![],
            submitter: None,
            device: None,
        });
        let Frame::Control(payload) = m.to_frame() else {
            panic!("control frame expected")
        };
        assert_eq!(Message::decode(&payload).unwrap(), m);
    }

    #[test]
    fn v5_chain_fields_are_bounded_at_decode() {
        let done = |chain_signature: String| {
            Message::Done(JobResult {
                outputs: vec![],
                receipt: vec![],
                signature: String::new(),
                chain_signature,
            })
        };
        let decode = |m: &Message| {
            let Frame::Control(payload) = m.to_frame() else {
                panic!("control frame expected")
            };
            Message::decode(&payload)
        };
        let ok = done(format!("0x{}", "00".repeat(65)));
        assert_eq!(decode(&ok).unwrap(), ok);
        assert!(matches!(
            decode(&done("0".repeat(133))),
            Err(MessageError::Bound(_))
        ));

        let registration = crate::chain::RegistrationSignature {
            node_address: format!("0x{}", "11".repeat(20)),
            key_protection: lockstep_identity::KeyProtection::File,
            attestation_digest: "0".repeat(64),
            certification_report_hash: "0".repeat(64),
            bundle_id: "ab".repeat(32),
            node_signature: format!("0x{}", "22".repeat(65)),
            device_signature: format!("0x{}", "33".repeat(64)),
        };
        let reply = |registration| {
            Message::AdminReply(crate::admin::AdminReply {
                ok: true,
                message: String::new(),
                bundle_id: String::new(),
                bundle_version: 0,
                certified: false,
                certification_report_sha256: None,
                registration: Some(registration),
                metrics: None,
            })
        };
        let good = reply(registration.clone());
        assert_eq!(decode(&good).unwrap(), good);
        let mut long = registration;
        long.device_signature.push('0');
        assert!(matches!(decode(&reply(long)), Err(MessageError::Bound(_))));
    }

    #[test]
    fn metrics_replies_are_bounded_at_decode() {
        let reply = |text: String| {
            Message::AdminReply(crate::admin::AdminReply {
                ok: true,
                message: String::new(),
                bundle_id: String::new(),
                bundle_version: 0,
                certified: false,
                certification_report_sha256: None,
                registration: None,
                metrics: Some(text),
            })
        };
        let decode = |m: &Message| {
            let Frame::Control(payload) = m.to_frame() else {
                panic!("control frame expected")
            };
            Message::decode(&payload)
        };
        let most = reply("#".repeat(lockstep_limits::MAX_METRICS_BYTES));
        assert_eq!(decode(&most).unwrap(), most);
        let over = reply("#".repeat(lockstep_limits::MAX_METRICS_BYTES + 1));
        assert!(matches!(decode(&over), Err(MessageError::Bound(_))));
    }

    #[test]
    fn other_versions_get_a_version_error() {
        let mut payload = postcard::to_stdvec(&Envelope {
            version: 8,
            message: Message::StatusRequest,
        })
        .unwrap();
        assert_eq!(Message::decode(&payload), Err(MessageError::Version(8)));
        payload.truncate(1);
        assert_eq!(Message::decode(&payload), Err(MessageError::Version(8)));
    }
}
