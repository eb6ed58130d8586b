//! The host tensor: a float32 array in C (row-major) order with a checked shape.

use lockstep_limits::{MAX_DIM, MAX_RANK, MAX_TENSOR_ELEMENTS};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Why a shape and a data buffer do not make a valid tensor.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TensorError {
    #[error("tensor has {rank} dimensions; Lockstep allows at most {MAX_RANK}")]
    TooManyDims { rank: usize },
    #[error(
        "shape {shape} exceeds Lockstep's limits ({MAX_DIM} per dimension, \
         {MAX_TENSOR_ELEMENTS} elements in all); split the tensor"
    )]
    TooLarge { shape: String },
    #[error("shape {shape} needs {expected} elements but {found} were given")]
    LengthMismatch {
        shape: String,
        expected: usize,
        found: usize,
    },
}

/// Checks a shape against the limits and returns its element count.
///
/// Every dimension is checked on its own too: a zero elsewhere in the shape
/// would otherwise let an absurd dimension through the product check.
pub(crate) fn element_count(shape: &[usize]) -> Result<usize, TensorError> {
    if shape.len() > MAX_RANK {
        return Err(TensorError::TooManyDims { rank: shape.len() });
    }
    let too_large = || TensorError::TooLarge {
        shape: shape_string(shape),
    };
    shape.iter().try_fold(1usize, |acc, &d| {
        if d > MAX_DIM {
            return Err(too_large());
        }
        acc.checked_mul(d)
            .filter(|&n| n <= MAX_TENSOR_ELEMENTS)
            .ok_or_else(too_large)
    })
}

/// A shape as people write it: `3x4`, `5`, or `scalar` for rank 0.
pub fn shape_string(shape: &[usize]) -> String {
    if shape.is_empty() {
        return "scalar".to_owned();
    }
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    dims.join("x")
}

/// A float32 tensor in C order whose shape is known to fit Lockstep's limits.
///
/// There is deliberately no `PartialEq`: float equality treats NaNs and
/// signed zeros in ways a determinism check must not, so use [`Tensor::bit_eq`].
#[derive(Debug, Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor, TensorError> {
        let expected = element_count(&shape)?;
        if expected != data.len() {
            return Err(TensorError::LengthMismatch {
                shape: shape_string(&shape),
                expected,
                found: data.len(),
            });
        }
        Ok(Tensor { shape, data })
    }

    pub fn zeros(shape: Vec<usize>) -> Result<Tensor, TensorError> {
        let n = element_count(&shape)?;
        Ok(Tensor {
            shape,
            data: vec![0.0; n],
        })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Mutable access to the elements; the shape stays fixed, so the tensor
    /// stays valid.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The IEEE-754 bit pattern of every element, in order.
    pub fn to_bits(&self) -> Vec<u32> {
        self.data.iter().map(|v| v.to_bits()).collect()
    }

    /// The shape as `3x4`, or `scalar` for rank 0.
    pub fn shape_string(&self) -> String {
        shape_string(&self.shape)
    }

    /// True when both tensors have the same shape and the same bit pattern in
    /// every element (so `NaN == NaN` with equal payloads, and `0.0 != -0.0`).
    pub fn bit_eq(&self, other: &Tensor) -> bool {
        self.shape == other.shape && self.first_bit_mismatch(other).is_none()
    }

    /// The first element whose bits differ, as `(index, self_bits, other_bits)`.
    ///
    /// Only elements both tensors have are compared, and shapes are not:
    /// this is for explaining a failed [`Tensor::bit_eq`], not replacing it.
    pub fn first_bit_mismatch(&self, other: &Tensor) -> Option<(usize, u32, u32)> {
        self.data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| (a.to_bits(), b.to_bits()))
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| (i, a, b))
    }

    /// SHA-256 of this tensor's canonical `.npy` encoding, exactly the bytes
    /// [`crate::npy::encode`] returns.
    ///
    /// Hashing the file format rather than the raw data means the digest
    /// commits to the shape as well as every bit of the data, and anyone can
    /// reproduce it with `sha256sum` on a file written by `numpy.save`.
    pub fn sha256(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        crate::npy::emit(self, |bytes| {
            hasher.update(bytes);
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap_or_else(|never| match never {});
        hasher.finalize().into()
    }

    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_length_rank_and_size() {
        assert_eq!(Tensor::new(vec![2, 3], vec![0.0; 6]).unwrap().len(), 6);
        assert!(matches!(
            Tensor::new(vec![2, 3], vec![0.0; 5]),
            Err(TensorError::LengthMismatch {
                expected: 6,
                found: 5,
                ..
            })
        ));
        assert!(matches!(
            Tensor::zeros(vec![1; MAX_RANK + 1]),
            Err(TensorError::TooManyDims { rank: 9 })
        ));
        assert!(matches!(
            Tensor::zeros(vec![MAX_TENSOR_ELEMENTS, 2]),
            Err(TensorError::TooLarge { .. })
        ));
        // Would overflow usize without checked multiplication.
        assert!(Tensor::zeros(vec![usize::MAX, usize::MAX]).is_err());
        // A zero dimension must not smuggle an oversized one through.
        assert!(Tensor::zeros(vec![0, MAX_DIM + 1]).is_err());
    }

    #[test]
    fn accessors_and_shape_string() {
        let s = Tensor::new(vec![], vec![7.0]).unwrap();
        assert_eq!(
            (s.rank(), s.len(), s.shape_string()),
            (0, 1, "scalar".into())
        );
        let e = Tensor::zeros(vec![0, 3]).unwrap();
        assert!(e.is_empty());
        assert_eq!(e.shape_string(), "0x3");
        let mut t = Tensor::zeros(vec![3, 4]).unwrap();
        t.data_mut()[5] = 1.0;
        assert_eq!(t.shape(), &[3, 4]);
        assert_eq!(t.to_bits()[5], 1.0f32.to_bits());
        assert_eq!(t.shape_string(), "3x4");
        assert_eq!(t.into_data().len(), 12);
    }

    #[test]
    fn bit_equality_is_exact() {
        let a = Tensor::new(vec![3], vec![f32::NAN, 0.0, 1.0]).unwrap();
        let b = Tensor::new(vec![3], vec![f32::NAN, -0.0, 1.0]).unwrap();
        assert!(a.bit_eq(&a.clone()));
        assert!(!a.bit_eq(&b));
        assert_eq!(a.first_bit_mismatch(&b), Some((1, 0, 0x8000_0000)));
        let c = Tensor::new(vec![1, 3], a.data().to_vec()).unwrap();
        assert!(!a.bit_eq(&c));
    }

    #[test]
    fn hash_commits_to_shape() {
        let a = Tensor::zeros(vec![2, 3]).unwrap();
        let b = Tensor::zeros(vec![3, 2]).unwrap();
        assert_ne!(a.sha256(), b.sha256());
        let mut want = Sha256::new();
        want.update(crate::npy::encode(&a));
        assert_eq!(a.sha256_hex(), hex::encode(want.finalize()));
    }
}
