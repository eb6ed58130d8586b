//! The fleet's side of an admin session with one node (the rules are in
//! `lockstep_protocol::admin`): connect, challenge, check the node's proof
//! of key possession, then send one signed command.

use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::PathBuf;

use lockstep_identity::{NodeId, Signature, SigningKey};
use lockstep_protocol::admin::{
    challenge_statement, AdminAction, AdminCommand, AdminHello, AdminReply, AdminStatement,
    BundleUpload, ImageUpload, NodeInfo, ADMIN_FORMAT,
};
use lockstep_protocol::{Frame, Message};
use lockstep_transport::frames::{write_frame, FrameReader};
use rand_core::RngCore;

/// Why a session with a node failed. Each says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    Transport(#[from] lockstep_transport::TransportError),
    #[error("node at {addr}: {reason}")]
    Wire { addr: SocketAddr, reason: String },
    #[error("node at {addr} failed to prove it holds the key it claims ({reason}); it may be an impostor: nothing was recorded")]
    Impostor { addr: SocketAddr, reason: String },
    #[error("node at {addr} refused: {message}")]
    Refused { addr: SocketAddr, message: String },
    /// A local file to be sent could not be read as announced.
    #[error("{path}: {reason}")]
    Source { path: PathBuf, reason: String },
}

/// One part of a streamed upload: `bytes` bytes of the file at `path`,
/// from `offset` (an image's slot part: the UKI file, or a byte range of
/// the .raw).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPart {
    /// For progress and messages (`uki`, `root`, `verity`).
    pub name: &'static str,
    pub path: PathBuf,
    pub offset: u64,
    pub bytes: u64,
}

/// An open session: the node's verified info and this session's nonce.
pub struct Session {
    pub addr: SocketAddr,
    pub info: NodeInfo,
    nonce: [u8; 32],
    // The connection lives as long as the session; an attestation runs on
    // it, on a stream of its own.
    connection: quinn::Connection,
    send: quinn::SendStream,
    reader: FrameReader,
}

impl Session {
    /// Connects (pinned to `expected` if given, else to whatever key the
    /// node presents), challenges the node, and checks that the info is
    /// signed by the very key that the TLS handshake proved.
    pub async fn open(
        addr: SocketAddr,
        expected: Option<&NodeId>,
    ) -> Result<Session, SessionError> {
        let (connection, presented) = match expected {
            Some(id) => (lockstep_transport::connect(addr, id).await?, id.to_base64()),
            None => lockstep_transport::connect_unpinned(addr).await?,
        };
        Session::challenge(addr, connection, presented).await
    }

    /// A fresh session (new stream, new challenge, new nonce) on this
    /// session's connection: for a command that follows a long exchange on
    /// another stream (an attestation), so that the node's stream read
    /// limit never runs out while the fleet waits.
    pub async fn renew(self) -> Result<Session, SessionError> {
        let Session {
            addr,
            info,
            connection,
            mut send,
            ..
        } = self;
        let _ = send.finish();
        Session::challenge(addr, connection, info.node_id).await
    }

    /// Challenges the node on a new stream of `connection`, whose TLS
    /// handshake proved the key `presented`.
    async fn challenge(
        addr: SocketAddr,
        connection: quinn::Connection,
        presented: String,
    ) -> Result<Session, SessionError> {
        let wire = |reason: String| SessionError::Wire { addr, reason };
        let (mut send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| wire(e.to_string()))?;
        let mut reader = FrameReader::new(recv);
        let mut challenge = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut challenge);
        write_frame(
            &mut send,
            &Message::AdminHello(AdminHello { challenge }).to_frame(),
        )
        .await
        .map_err(|e| wire(e.to_string()))?;
        let answer = match next_message(&mut reader).await.map_err(wire)? {
            Message::AdminChallenge(c) => c,
            Message::Rejected(e) => {
                return Err(wire(format!(
                    "does not support fleet administration: {}",
                    e.message
                )))
            }
            other => return Err(wire(format!("unexpected reply {other:?}"))),
        };
        let impostor = |reason: String| SessionError::Impostor { addr, reason };
        if answer.info.node_id != presented {
            return Err(impostor(format!(
                "its TLS key is {presented} but it claims node id {}",
                answer.info.node_id
            )));
        }
        let claimed = NodeId::parse(&answer.info.node_id)
            .map_err(|e| impostor(format!("claimed node id is not a key: {e}")))?;
        Signature::parse(&answer.signature)
            .and_then(|s| {
                s.verify(
                    &claimed,
                    &challenge_statement(&challenge, &answer.info, &answer.nonce),
                )
            })
            .map_err(|e| impostor(format!("challenge signature: {e}")))?;
        Ok(Session {
            addr,
            info: answer.info,
            nonce: answer.nonce,
            connection,
            send,
            reader,
        })
    }

    /// The session's connection (its TLS handshake proved the node's key).
    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }

    /// Signs `action` for this node and this session's nonce.
    pub fn sign(
        &self,
        key: &SigningKey,
        action: AdminAction,
        bundle: Option<BundleUpload>,
    ) -> AdminCommand {
        self.sign_with(key, action, bundle, None)
    }

    /// Signs `action` with an image update attached (`PushImage`).
    pub fn sign_image(
        &self,
        key: &SigningKey,
        action: AdminAction,
        image: ImageUpload,
    ) -> AdminCommand {
        self.sign_with(key, action, None, Some(image))
    }

    fn sign_with(
        &self,
        key: &SigningKey,
        action: AdminAction,
        bundle: Option<BundleUpload>,
        image: Option<ImageUpload>,
    ) -> AdminCommand {
        let statement = AdminStatement {
            format: ADMIN_FORMAT.to_string(),
            node: self.info.node_id.clone(),
            nonce: hex::encode(self.nonce),
            action,
        };
        let bytes =
            lockstep_canonical_json::to_vec(&statement).expect("admin statements serialise");
        let signature = key
            .sign_minisign(&bytes, "lockstep admin command")
            .to_file();
        AdminCommand {
            operator: key.public().to_base64(),
            statement: bytes,
            signature,
            bundle,
            image,
        }
    }

    /// Sends a command (and the bundle's files, in order) and waits for the
    /// node's reply; a refusal is an error.
    pub async fn send(
        mut self,
        command: AdminCommand,
        files: &[Vec<u8>],
    ) -> Result<AdminReply, SessionError> {
        let addr = self.addr;
        let wire = |reason: String| SessionError::Wire { addr, reason };
        write_frame(&mut self.send, &Message::AdminCommand(command).to_frame())
            .await
            .map_err(|e| wire(e.to_string()))?;
        for file in files {
            for chunk in file.chunks(lockstep_limits::WIRE_CHUNK_BYTES) {
                write_frame(&mut self.send, &Frame::Data(chunk.to_vec()))
                    .await
                    .map_err(|e| wire(e.to_string()))?;
            }
        }
        self.reply().await
    }

    /// Sends a command, then `parts` streamed from their files in order
    /// (chunks of at most `WIRE_CHUNK_BYTES`, never empty, never spanning
    /// two parts, read through one bounded buffer), and waits for the
    /// node's reply; a refusal is an error. `progress(part, sent)` is
    /// called after every chunk.
    pub async fn send_streamed(
        mut self,
        command: AdminCommand,
        parts: &[StreamPart],
        progress: &mut dyn FnMut(&StreamPart, u64),
    ) -> Result<AdminReply, SessionError> {
        let addr = self.addr;
        let wire = |reason: String| SessionError::Wire { addr, reason };
        write_frame(&mut self.send, &Message::AdminCommand(command).to_frame())
            .await
            .map_err(|e| wire(e.to_string()))?;
        let streamed = self.stream_parts(parts, progress).await;
        match streamed {
            Ok(()) => self.reply().await,
            // A node that refuses mid-stream stops our sending side and
            // says why on its own: read that, so the operator sees the
            // reason and not "stopped by peer".
            Err(sending @ SessionError::Wire { .. }) => match self.reply().await {
                Err(refused @ SessionError::Refused { .. }) => Err(refused),
                _ => Err(sending),
            },
            Err(e) => Err(e),
        }
    }

    async fn stream_parts(
        &mut self,
        parts: &[StreamPart],
        progress: &mut dyn FnMut(&StreamPart, u64),
    ) -> Result<(), SessionError> {
        let addr = self.addr;
        let wire = |reason: String| SessionError::Wire { addr, reason };
        let mut buf = vec![0u8; lockstep_limits::WIRE_CHUNK_BYTES];
        for part in parts {
            let source = |reason: String| SessionError::Source {
                path: part.path.clone(),
                reason,
            };
            let mut file = std::fs::File::open(&part.path).map_err(|e| source(e.to_string()))?;
            file.seek(SeekFrom::Start(part.offset))
                .map_err(|e| source(e.to_string()))?;
            let mut sent = 0u64;
            while sent < part.bytes {
                let want = (part.bytes - sent).min(buf.len() as u64) as usize;
                let n = file
                    .read(&mut buf[..want])
                    .map_err(|e| source(e.to_string()))?;
                if n == 0 {
                    return Err(source(format!(
                        "{} ended after {sent} of the {} {} bytes; the image changed while it was sent",
                        part.path.display(),
                        part.bytes,
                        part.name
                    )));
                }
                write_frame(&mut self.send, &Frame::Data(buf[..n].to_vec()))
                    .await
                    .map_err(|e| wire(e.to_string()))?;
                sent += n as u64;
                progress(part, sent);
            }
        }
        Ok(())
    }

    /// Finishes the sending side and reads the node's reply.
    async fn reply(mut self) -> Result<AdminReply, SessionError> {
        let addr = self.addr;
        let wire = |reason: String| SessionError::Wire { addr, reason };
        let _ = self.send.finish();
        match next_message(&mut self.reader).await.map_err(wire)? {
            Message::AdminReply(r) if r.ok => Ok(r),
            Message::AdminReply(r) => Err(SessionError::Refused {
                addr,
                message: r.message,
            }),
            Message::Rejected(e) => Err(SessionError::Refused {
                addr,
                message: e.message,
            }),
            other => Err(wire(format!("unexpected reply {other:?}"))),
        }
    }
}

async fn next_message(reader: &mut FrameReader) -> Result<Message, String> {
    match reader.next().await.map_err(|e| e.to_string())? {
        Some(Frame::Control(payload)) => Message::decode(&payload).map_err(|e| e.to_string()),
        Some(Frame::Data(_)) => Err("data where a control message was expected".into()),
        None => Err("the node closed the stream without answering".into()),
    }
}
