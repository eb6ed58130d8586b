//! Tensors on the wire: a [`TensorHeader`] in a control message, then the
//! tensor's little-endian float32 data as data chunks of at most
//! `WIRE_CHUNK_BYTES`, each chunk belonging to exactly one tensor. The
//! receiver checks every tensor against its header's shape and SHA-256.

use lockstep_limits::{MAX_RANK, MAX_TENSOR_ELEMENTS, WIRE_CHUNK_BYTES};
use lockstep_tensor::Tensor;

use crate::frame::Frame;
use crate::message::TensorHeader;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorStreamError {
    #[error("tensor '{name}': {reason}")]
    Shape { name: String, reason: String },
    #[error("a data chunk arrived after every announced tensor was complete")]
    Unexpected,
    #[error(
        "a data chunk of {len} bytes crosses the end of tensor '{name}' ({remaining} bytes left)"
    )]
    Overrun {
        name: String,
        len: usize,
        remaining: usize,
    },
    #[error("tensor '{name}' does not match its announced SHA-256 (corrupted or substituted in transit)")]
    Hash { name: String },
}

/// The header announcing `t` as `name`.
pub fn header(name: &str, t: &Tensor) -> TensorHeader {
    TensorHeader {
        name: name.to_string(),
        shape: t.shape().iter().map(|&d| d as u64).collect(),
        sha256: t.sha256(),
    }
}

/// The data frames of one tensor, produced lazily.
pub fn tensor_chunks(t: &Tensor) -> impl Iterator<Item = Frame> + '_ {
    t.data()
        .chunks(WIRE_CHUNK_BYTES / 4)
        .map(|c| Frame::Data(c.iter().flat_map(|v| v.to_le_bytes()).collect()))
}

/// Reassembles announced tensors from data chunks.
#[derive(Debug)]
pub struct TensorReceiver {
    headers: Vec<TensorHeader>,
    /// Index of the tensor being received.
    at: usize,
    data: Vec<f32>,
    expected_len: usize,
    ready: Vec<(String, Tensor)>,
}

impl TensorReceiver {
    /// Checks every header against the tensor bounds before any data is
    /// accepted.
    pub fn new(headers: Vec<TensorHeader>) -> Result<TensorReceiver, TensorStreamError> {
        for h in &headers {
            let elements = h
                .shape
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n <= MAX_TENSOR_ELEMENTS as u64);
            if h.shape.len() > MAX_RANK || elements.is_none() {
                return Err(TensorStreamError::Shape {
                    name: h.name.clone(),
                    reason: format!(
                        "shape {:?} is over the bound ({MAX_RANK} dimensions, {MAX_TENSOR_ELEMENTS} elements)",
                        h.shape
                    ),
                });
            }
        }
        let mut r = TensorReceiver {
            headers,
            at: 0,
            data: Vec::new(),
            expected_len: 0,
            ready: Vec::new(),
        };
        r.start_next()?;
        Ok(r)
    }

    /// True once every announced tensor is complete.
    pub fn is_done(&self) -> bool {
        self.at >= self.headers.len()
    }

    /// Takes one data chunk; returns the tensors it completes.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<(String, Tensor)>, TensorStreamError> {
        let Some(h) = self.headers.get(self.at) else {
            return Err(TensorStreamError::Unexpected);
        };
        let remaining = (self.expected_len - self.data.len()) * 4;
        // An empty chunk moves nothing: refused, so a sender cannot keep a
        // transfer alive without sending data.
        if chunk.is_empty() || chunk.len() > remaining || !chunk.len().is_multiple_of(4) {
            return Err(TensorStreamError::Overrun {
                name: h.name.clone(),
                len: chunk.len(),
                remaining,
            });
        }
        // Grow as data arrives (doubling, capped at the announced size): a
        // header alone costs nothing, and a sender must actually send the
        // bytes it makes the receiver hold.
        let wanted = self.data.len() + chunk.len() / 4;
        if wanted > self.data.capacity() {
            let target = (self.data.capacity() * 2)
                .max(wanted)
                .min(self.expected_len);
            self.data.reserve_exact(target - self.data.len());
        }
        self.data.extend(
            chunk
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        if self.data.len() == self.expected_len {
            self.finish_current()?;
            self.start_next()?;
        }
        Ok(std::mem::take(&mut self.ready))
    }

    /// Tensors completed without data (zero elements) so far.
    pub fn take_ready(&mut self) -> Vec<(String, Tensor)> {
        std::mem::take(&mut self.ready)
    }

    fn shape(&self) -> Vec<usize> {
        self.headers[self.at]
            .shape
            .iter()
            .map(|&d| d as usize)
            .collect()
    }

    /// Moves to the next tensor, completing empty ones on the way.
    fn start_next(&mut self) -> Result<(), TensorStreamError> {
        while self.at < self.headers.len() {
            self.expected_len = self.shape().iter().product();
            self.data = Vec::new();
            if self.expected_len > 0 {
                return Ok(());
            }
            self.finish_current()?;
        }
        Ok(())
    }

    fn finish_current(&mut self) -> Result<(), TensorStreamError> {
        let h = &self.headers[self.at];
        let t = Tensor::new(self.shape(), std::mem::take(&mut self.data)).map_err(|e| {
            TensorStreamError::Shape {
                name: h.name.clone(),
                reason: e.to_string(),
            }
        })?;
        if t.sha256() != h.sha256 {
            return Err(TensorStreamError::Hash {
                name: h.name.clone(),
            });
        }
        self.ready.push((h.name.clone(), t));
        self.at += 1;
        Ok(())
    }
}

#[cfg(test)]
mod growth_tests {
    use super::*;

    #[test]
    fn a_header_alone_allocates_nothing_and_data_grows_as_it_arrives() {
        let h = TensorHeader {
            name: "x".into(),
            shape: vec![1 << 15, 1 << 15],
            sha256: [0; 32],
        };
        let mut r = TensorReceiver::new(vec![h]).unwrap();
        assert_eq!(r.data.capacity(), 0, "nothing reserved for 4 GiB announced");
        r.push(&[0u8; 4096]).unwrap();
        assert!(r.data.capacity() < 1 << 20, "{}", r.data.capacity());
    }

    #[test]
    fn an_empty_chunk_is_refused() {
        let t = Tensor::new(vec![2], vec![1.0, 2.0]).unwrap();
        let mut r = TensorReceiver::new(vec![header("t", &t)]).unwrap();
        assert!(matches!(
            r.push(&[]),
            Err(TensorStreamError::Overrun { .. })
        ));
    }

    #[test]
    fn growth_never_passes_the_announced_size() {
        let t = Tensor::new(vec![1000], (0..1000).map(|i| i as f32).collect()).unwrap();
        let mut r = TensorReceiver::new(vec![header("t", &t)]).unwrap();
        let bytes: Vec<u8> = t.data().iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut got = Vec::new();
        for piece in bytes.chunks(12) {
            assert!(r.data.capacity() <= 1000);
            got.extend(r.push(piece).unwrap());
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.sha256(), t.sha256());
    }
}
