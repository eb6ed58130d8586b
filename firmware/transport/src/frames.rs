//! Frames over a QUIC stream: the thin async layer between a quinn stream
//! and the sans-IO protocol (`lockstep-protocol`), shared by the daemon and
//! the client.

use std::collections::VecDeque;

use lockstep_protocol::{Frame, FrameDecoder, FrameError};

/// Reads whole frames from a receive stream, in bounded reads.
pub struct FrameReader {
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
    ready: VecDeque<Frame>,
    buf: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("the peer stopped reading or reset the stream: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("cannot send: {0}")]
    Write(#[from] quinn::WriteError),
}

impl FrameReader {
    pub fn new(recv: quinn::RecvStream) -> FrameReader {
        FrameReader {
            recv,
            decoder: FrameDecoder::new(),
            ready: VecDeque::new(),
            buf: vec![0; 64 * 1024],
        }
    }

    /// The next frame, or `None` at a clean end of stream.
    pub async fn next(&mut self) -> Result<Option<Frame>, WireError> {
        loop {
            if let Some(f) = self.ready.pop_front() {
                return Ok(Some(f));
            }
            match self.recv.read(&mut self.buf).await? {
                Some(n) => self.ready.extend(self.decoder.push(&self.buf[..n])?),
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
