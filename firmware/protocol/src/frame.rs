//! Framing of a job stream: `kind (1 byte) || length (u32 LE) || payload`.
//!
//! Kind 0 is a control message (postcard, at most `MAX_FRAME_BYTES`); kind 1
//! is a chunk of tensor data (at most `WIRE_CHUNK_BYTES`). A length over its
//! kind's bound is refused as soon as the header arrives, before any of the
//! payload is buffered.

use lockstep_limits::{MAX_FRAME_BYTES, WIRE_CHUNK_BYTES};

pub const HEADER_BYTES: usize = 5;
const KIND_CONTROL: u8 = 0;
const KIND_DATA: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Control(Vec<u8>),
    Data(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown frame kind {0}; the peer speaks another protocol")]
    Kind(u8),
    #[error("{kind} frame of {len} bytes exceeds the {bound}-byte bound")]
    TooLong {
        kind: &'static str,
        len: usize,
        bound: usize,
    },
    #[error("the stream ended inside a frame ({0} bytes pending)")]
    Truncated(usize),
    /// The receiver's admission check refused the frame at its header
    /// (over a memory budget): nothing of its payload was buffered. The
    /// peer may retry later.
    #[error("{0}")]
    Refused(String),
}

/// A frame's kind, as its header announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Control,
    Data,
}

/// Called with each frame's kind and payload length as soon as its header
/// is complete, before any of the payload is buffered: the receiver's
/// chance to reserve that memory from a budget or refuse the frame.
pub type Admit<'a> = &'a mut dyn FnMut(FrameKind, usize) -> Result<(), FrameError>;

impl Frame {
    /// The frame's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload) = match self {
            Frame::Control(p) => (KIND_CONTROL, p),
            Frame::Data(p) => (KIND_DATA, p),
        };
        let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
        out.push(kind);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
        out
    }
}

/// Incremental decoder: push bytes as they arrive, pull whole frames.
/// It never holds more than one frame plus a header.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Appends received bytes and returns the frames they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
        self.push_admitted(bytes, &mut |_, _| Ok(()))
    }

    /// [`push`](Self::push), asking `admit` about each frame as its header
    /// completes; a refusal stops decoding with its error. An admitted
    /// frame's buffer is allocated at exactly the announced size, so what
    /// was admitted is what is held.
    pub fn push_admitted(
        &mut self,
        mut bytes: &[u8],
        admit: Admit<'_>,
    ) -> Result<Vec<Frame>, FrameError> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let had_header = self.buf.len() >= HEADER_BYTES;
            let need = self.needed()?;
            let take = need.min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if !had_header && self.buf.len() == HEADER_BYTES {
                let len = self.payload_len()?;
                let kind = if self.buf[0] == KIND_CONTROL {
                    FrameKind::Control
                } else {
                    FrameKind::Data
                };
                admit(kind, len)?;
                self.buf.reserve_exact(len);
            }
            if let Some(frame) = self.complete()? {
                frames.push(frame);
            }
        }
        Ok(frames)
    }

    /// Call at end of stream: refuses a partial frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated(self.buf.len()))
        }
    }

    /// Bytes still missing from the current frame (header first).
    fn needed(&self) -> Result<usize, FrameError> {
        if self.buf.len() < HEADER_BYTES {
            return Ok(HEADER_BYTES - self.buf.len());
        }
        let len = self.payload_len()?;
        Ok(HEADER_BYTES + len - self.buf.len())
    }

    fn payload_len(&self) -> Result<usize, FrameError> {
        let len = u32::from_le_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        let (kind, bound) = match self.buf[0] {
            KIND_CONTROL => ("control", MAX_FRAME_BYTES),
            KIND_DATA => ("data", WIRE_CHUNK_BYTES),
            other => return Err(FrameError::Kind(other)),
        };
        if len > bound {
            return Err(FrameError::TooLong { kind, len, bound });
        }
        Ok(len)
    }

    fn complete(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < HEADER_BYTES {
            return Ok(None);
        }
        let len = self.payload_len()?;
        if self.buf.len() < HEADER_BYTES + len {
            return Ok(None);
        }
        // The payload keeps the buffer (no copy); the header is shifted out.
        let mut payload = std::mem::take(&mut self.buf);
        let kind = payload[0];
        payload.drain(..HEADER_BYTES);
        Ok(Some(if kind == KIND_CONTROL {
            Frame::Control(payload)
        } else {
            Frame::Data(payload)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_any_split() {
        let frames = vec![
            Frame::Control(b"hello".to_vec()),
            Frame::Data(vec![7; 1000]),
            Frame::Control(Vec::new()),
        ];
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        for step in [1, 2, 5, 7, 100, wire.len()] {
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            for piece in wire.chunks(step) {
                got.extend(d.push(piece).unwrap());
            }
            d.finish().unwrap();
            assert_eq!(got, frames, "split every {step} bytes");
        }
    }

    #[test]
    fn oversized_and_unknown_frames_are_refused_at_the_header() {
        let mut d = FrameDecoder::new();
        let mut header = vec![1u8];
        header.extend_from_slice(&((WIRE_CHUNK_BYTES + 1) as u32).to_le_bytes());
        assert!(matches!(d.push(&header), Err(FrameError::TooLong { .. })));
        let mut d = FrameDecoder::new();
        assert_eq!(d.push(&[9, 0, 0, 0, 0]), Err(FrameError::Kind(9)));
        let mut d = FrameDecoder::new();
        d.push(&[0, 3, 0, 0, 0, 1]).unwrap();
        assert_eq!(d.finish(), Err(FrameError::Truncated(6)));
    }

    #[test]
    fn admission_sees_every_header_before_its_payload() {
        let frames = vec![Frame::Control(vec![1; 10]), Frame::Data(vec![2; 8])];
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        for step in [1, 3, wire.len()] {
            let mut seen = Vec::new();
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            for piece in wire.chunks(step) {
                got.extend(
                    d.push_admitted(piece, &mut |k, n| {
                        seen.push((k, n));
                        Ok(())
                    })
                    .unwrap(),
                );
            }
            assert_eq!(got, frames);
            assert_eq!(seen, [(FrameKind::Control, 10), (FrameKind::Data, 8)]);
        }
        // A refusal stops at the header: the payload is never buffered.
        let mut d = FrameDecoder::new();
        let r = d.push_admitted(&wire[..HEADER_BYTES + 2], &mut |_, n| {
            Err(FrameError::Refused(format!("{n} bytes: busy")))
        });
        assert_eq!(r, Err(FrameError::Refused("10 bytes: busy".into())));
        assert!(d.buf.capacity() < 10);
    }
}
