//! Frames over a QUIC stream: the thin async layer between a quinn stream
//! and the sans-IO protocol (`lockstep-protocol`), shared by the daemon and
//! the client.

use std::collections::VecDeque;
use std::time::Duration;

use lockstep_protocol::{Frame, FrameDecoder, FrameError, FrameKind};

/// Most bytes taken from quinn's receive buffer at once. `read_chunk` hands
/// over quinn's own buffer, so nothing is copied into a per-stream buffer
/// and an idle stream holds no read buffer at all.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// The admission check a reader runs at each frame header (see
/// [`FrameDecoder::push_admitted`]).
pub type Admission = Box<dyn FnMut(FrameKind, usize) -> Result<(), FrameError> + Send>;

/// Reads whole frames from a receive stream, in bounded reads.
pub struct FrameReader {
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
    ready: VecDeque<Frame>,
    admission: Option<Admission>,
    timeout: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("the peer stopped reading or reset the stream: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("cannot send: {0}")]
    Write(#[from] quinn::WriteError),
    /// The peer owed a frame (or was not reading what it was sent) for
    /// longer than the reader's or writer's time limit.
    #[error("the peer stalled: nothing moved for {0} ms")]
    Stalled(u64),
}

impl FrameReader {
    pub fn new(recv: quinn::RecvStream) -> FrameReader {
        FrameReader {
            recv,
            decoder: FrameDecoder::new(),
            ready: VecDeque::new(),
            admission: None,
            timeout: None,
        }
    }

    /// A reader that asks `admission` about every frame at its header, and
    /// gives up with [`WireError::Stalled`] when the next frame has not
    /// arrived within `timeout`: what a node uses for strangers' streams.
    pub fn guarded(
        recv: quinn::RecvStream,
        admission: Admission,
        timeout: Duration,
    ) -> FrameReader {
        FrameReader {
            admission: Some(admission),
            timeout: Some(timeout),
            ..FrameReader::new(recv)
        }
    }

    /// Tells the peer to stop sending on this stream (its writes then fail
    /// at once): for a node that has refused the request mid-upload.
    pub fn stop(&mut self) {
        let _ = self.recv.stop(0u32.into());
    }

    /// The next frame, or `None` at a clean end of stream.
    pub async fn next(&mut self) -> Result<Option<Frame>, WireError> {
        match self.timeout {
            None => self.next_unbounded().await,
            Some(limit) => {
                let stalled = async {
                    smol::Timer::after(limit).await;
                    Err(WireError::Stalled(limit.as_millis() as u64))
                };
                smol::future::or(self.next_unbounded(), stalled).await
            }
        }
    }

    async fn next_unbounded(&mut self) -> Result<Option<Frame>, WireError> {
        loop {
            if let Some(f) = self.ready.pop_front() {
                return Ok(Some(f));
            }
            match self.recv.read_chunk(READ_CHUNK_BYTES, true).await? {
                Some(chunk) => {
                    let frames = match &mut self.admission {
                        Some(admit) => self.decoder.push_admitted(&chunk.bytes, admit)?,
                        None => self.decoder.push(&chunk.bytes)?,
                    };
                    self.ready.extend(frames);
                }
                None => {
                    self.decoder.finish()?;
                    return Ok(None);
                }
            }
        }
    }
}

pub async fn write_frame(send: &mut quinn::SendStream, frame: &Frame) -> Result<(), WireError> {
    send.write_all(&frame.encode()).await?;
    Ok(())
}

/// [`write_frame`], giving up with [`WireError::Stalled`] when the peer has
/// not taken the frame within `limit` (it stopped reading, and QUIC flow
/// control holds the write).
pub async fn write_frame_within(
    send: &mut quinn::SendStream,
    frame: &Frame,
    limit: Duration,
) -> Result<(), WireError> {
    let stalled = async {
        smol::Timer::after(limit).await;
        Err(WireError::Stalled(limit.as_millis() as u64))
    };
    smol::future::or(write_frame(send, frame), stalled).await
}
