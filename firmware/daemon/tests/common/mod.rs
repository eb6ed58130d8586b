//! A real `lockstepd` process on loopback, for the integration tests.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running node; killed when dropped.
pub struct Node {
    pub child: Child,
    /// `127.0.0.1:PORT` as the daemon printed it.
    pub addr: String,
    /// The node id as the daemon printed it.
    pub key: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `lockstepd` on an ephemeral loopback port with `backend` and any
/// extra flags, and waits for its "listening" line. The node serves
/// uncertified (`--uncertified`): most tests are not about certification.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn start(state: &Path, backend: &str, extra: &[&str]) -> Node {
    let mut flags = vec!["--uncertified"];
    flags.extend_from_slice(extra);
    start_certified(state, backend, &flags)
}

/// Starts `lockstepd` without `--uncertified`: it serves only with a
/// passing certification report (give `--trust-certifier KEY` in `extra`).
/// The device key is a file (`--file-key`) unless `extra` gives
/// `--sealed-identity` (then set `CREDENTIALS_DIRECTORY` with
/// [`start_with_env`]).
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn start_certified(state: &Path, backend: &str, extra: &[&str]) -> Node {
    start_with_env(state, backend, extra, &[])
}

/// [`start_certified`] with extra environment variables.
#[allow(dead_code)]
pub fn start_with_env(
    state: &Path,
    backend: &str,
    extra: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> Node {
    let key_source: &[&str] = if extra.contains(&"--sealed-identity") {
        &[]
    } else {
        &["--file-key"]
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockstepd"))
        .args(["--listen", "127.0.0.1:0", "--backend", backend, "--state"])
        .arg(state)
        .args(key_source)
        .args(extra)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .stdout(Stdio::piped())
        // LOCKSTEP_TEST_LOG=1 shows the node's log, for debugging a test.
        .stderr(if std::env::var_os("LOCKSTEP_TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let rest = line
        .strip_prefix("lockstepd listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let (addr, key) = rest.trim().split_once(" as ").unwrap();
    Node {
        child,
        addr: addr.to_string(),
        key: key.to_string(),
    }
}

/// `VK_ICD_FILENAMES` listing `n` copies of the lavapipe driver manifest
/// (written into `dir`): the Vulkan loader then lists `n` devices, all
/// lavapipe, all with lavapipe's one device UUID. How the multi-device
/// tests get several devices on a machine without GPUs.
#[allow(dead_code)]
pub fn lavapipe_icds(dir: &Path, n: usize) -> std::ffi::OsString {
    let system = [
        "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json",
        "/usr/share/vulkan/icd.d/lvp_icd.json",
    ]
    .into_iter()
    .map(Path::new)
    .find(|p| p.exists())
    .expect("lavapipe's ICD manifest is missing: install mesa-vulkan-drivers (make test does)");
    let manifest = std::fs::read(system).unwrap();
    let paths: Vec<String> = (0..n)
        .map(|i| {
            let path = dir.join(format!("lvp-{i}.json"));
            std::fs::write(&path, &manifest).unwrap();
            path.display().to_string()
        })
        .collect();
    paths.join(":").into()
}

/// The `lockstep` client from the same target directory as this
/// `lockstepd` (`cargo test --workspace` builds both).
#[allow(dead_code)]
pub fn lockstep_bin() -> std::path::PathBuf {
    let client =
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_lockstepd")).with_file_name("lockstep");
    assert!(
        client.exists(),
        "{} is missing: run `cargo build -p lockstep-cli` (make test builds it)",
        client.display()
    );
    client
}

impl Node {
    /// The node's address, parsed.
    #[allow(dead_code)]
    pub fn socket(&self) -> std::net::SocketAddr {
        self.addr.parse().unwrap()
    }

    /// The node's id, parsed.
    #[allow(dead_code)]
    pub fn node_id(&self) -> lockstep_identity::NodeId {
        lockstep_identity::NodeId::parse(&self.key).unwrap()
    }

    /// The node's resident memory now and its peak so far, in KiB
    /// (`VmRSS` and `VmHWM` of /proc/PID/status).
    #[allow(dead_code)]
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} in /proc status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Whether the process is still running.
    #[allow(dead_code)]
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// A client of a node over QUIC, from a chosen loopback address: tests
/// play several peers (127.0.0.1 honest, 127.0.0.2 hostile, ...) because
/// a node counts connections, evidence turns and retention per source.
#[allow(dead_code)]
pub mod client {
    use std::collections::BTreeMap;
    use std::net::IpAddr;

    use lockstep_identity::{Signature, SigningKey};
    use lockstep_protocol::admin::{
        challenge_statement, AdminAction, AdminCommand, AdminHello, AdminReply, AdminStatement,
        ImageUpload, NodeInfo, ADMIN_FORMAT,
    };
    use lockstep_protocol::{
        header, tensor_chunks, EvidenceAccess, Frame, JobRequest, LeafRequest, Message,
    };
    use lockstep_tensor::Tensor;
    use lockstep_transport::frames::{write_frame, FrameReader};
    use lockstep_transport::TransportError;
    use rand_core::RngCore;

    use super::Node;

    pub async fn connect_from(
        node: &Node,
        local: &str,
    ) -> Result<quinn::Connection, TransportError> {
        let local: IpAddr = local.parse().unwrap();
        lockstep_transport::connect_from(local, node.socket(), &node.node_id()).await
    }

    /// The reply to one request, and the stream's reader for what follows.
    pub async fn ask(
        conn: &quinn::Connection,
        request: &Message,
        data: &[Frame],
    ) -> Option<(Message, FrameReader)> {
        let (mut send, recv) = conn.open_bi().await.ok()?;
        let _ = write_frame(&mut send, &request.to_frame()).await;
        for f in data {
            if write_frame(&mut send, f).await.is_err() {
                break;
            }
        }
        let _ = send.finish();
        let mut reader = FrameReader::new(recv);
        match reader.next().await {
            Ok(Some(Frame::Control(p))) => Some((Message::decode(&p).ok()?, reader)),
            _ => None,
        }
    }

    /// A program applying `op` (no attributes) to input `x` of `shape`.
    pub fn one_op(op: &str, shape: &[usize]) -> lockstep_program::Program {
        let json = format!(
            r#"{{"version":1,"inputs":[{{"name":"x","shape":{shape:?}}}],"outputs":["y"],
                "body":[{{"op":"{op}","inputs":["x"],"output":"y"}}]}}"#
        );
        lockstep_program::Program::from_json(json.as_bytes()).unwrap()
    }

    /// Submits `program` on input `x`; the node's first reply.
    pub async fn submit(
        conn: &quinn::Connection,
        job_id: [u8; 16],
        program: &lockstep_program::Program,
        x: &Tensor,
    ) -> Option<Message> {
        submit_on(conn, job_id, program, x, None).await
    }

    /// [`submit`] to a named device of the node.
    pub async fn submit_on(
        conn: &quinn::Connection,
        job_id: [u8; 16],
        program: &lockstep_program::Program,
        x: &Tensor,
        device: Option<lockstep_protocol::DeviceSelector>,
    ) -> Option<Message> {
        let request = Message::Submit(JobRequest {
            job_id,
            program: program.to_postcard(),
            inputs: vec![header("x", x)],
            references: vec![],
            submitter: None,
            device,
        });
        let data: Vec<Frame> = tensor_chunks(x).collect();
        ask(conn, &request, &data).await.map(|(m, _)| m)
    }

    /// The receipt of a finished job, as evidence access.
    pub fn access(reply: &Message) -> EvidenceAccess {
        let Message::Done(done) = reply else {
            panic!("the job did not finish: {reply:?}")
        };
        EvidenceAccess::Receipt {
            receipt: done.receipt.clone(),
            signature: done.signature.clone(),
        }
    }

    /// Leaf `index` of a job, with its data; the first reply.
    pub fn leaf_request(
        job_id: [u8; 16],
        index: u64,
        with_data: bool,
        access: EvidenceAccess,
    ) -> Message {
        Message::FetchLeaf(LeafRequest {
            job_id,
            index,
            with_data,
            access,
        })
    }

    /// A fresh random-looking job id from a counter and a tag.
    pub fn job_id(tag: u8, n: u64) -> [u8; 16] {
        let mut id = [tag; 16];
        id[..8].copy_from_slice(&n.to_le_bytes());
        id
    }

    pub fn tensors(pairs: &[(&str, Tensor)]) -> BTreeMap<String, Tensor> {
        pairs
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect()
    }

    /// One admin session: the node's info, and the reply to `action` (with
    /// `image` and the data chunks `frames`). `None` for the action: only the
    /// info.
    pub async fn admin(
        node: &Node,
        key: &SigningKey,
        action: Option<AdminAction>,
        image: Option<ImageUpload>,
        frames: Vec<Vec<u8>>,
    ) -> (NodeInfo, Option<AdminReply>) {
        let conn = connect_from(node, "127.0.0.1").await.unwrap();
        let (mut send, recv) = conn.open_bi().await.unwrap();
        let mut reader = FrameReader::new(recv);
        let mut challenge = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut challenge);
        write_frame(
            &mut send,
            &Message::AdminHello(AdminHello { challenge }).to_frame(),
        )
        .await
        .unwrap();
        let Some(Frame::Control(p)) = reader.next().await.unwrap() else {
            panic!("no challenge")
        };
        let Message::AdminChallenge(answer) = Message::decode(&p).unwrap() else {
            panic!("not a challenge")
        };
        Signature::parse(&answer.signature)
            .unwrap()
            .verify(
                &node.node_id(),
                &challenge_statement(&challenge, &answer.info, &answer.nonce),
            )
            .unwrap();
        let Some(action) = action else {
            let _ = send.finish();
            return (answer.info, None);
        };
        let statement = lockstep_canonical_json::to_vec(&AdminStatement {
            format: ADMIN_FORMAT.into(),
            node: answer.info.node_id.clone(),
            nonce: hex::encode(answer.nonce),
            action,
        })
        .unwrap();
        let command = AdminCommand {
            operator: key.public().to_base64(),
            signature: key.sign_minisign(&statement, "test admin").to_file(),
            statement,
            bundle: None,
            image,
        };
        write_frame(&mut send, &Message::AdminCommand(command).to_frame())
            .await
            .unwrap();
        for chunk in frames {
            // A node that refused stops the stream: then stop sending.
            if write_frame(&mut send, &Frame::Data(chunk)).await.is_err() {
                break;
            }
        }
        let _ = send.finish();
        let Some(Frame::Control(p)) = reader.next().await.unwrap() else {
            panic!("no reply")
        };
        let reply = match Message::decode(&p).unwrap() {
            Message::AdminReply(r) => r,
            other => panic!("not an admin reply: {other:?}"),
        };
        conn.close(0u32.into(), b"");
        (answer.info, Some(reply))
    }
}
