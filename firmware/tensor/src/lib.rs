//! Host-side tensors for Lockstep and the NumPy `.npy` codec that moves them
//! in and out of the appliance.
//!
//! A [`Tensor`] is always float32 in C order with a shape inside the bounds of
//! [`lockstep_limits`]; constructing one checks that, so code holding a
//! `Tensor` never re-validates. Equality is by bit pattern ([`Tensor::bit_eq`])
//! and identity is [`Tensor::sha256`] of the canonical `.npy` bytes, because a
//! deterministic runtime is judged on exact bits, not on float comparison.

#![forbid(unsafe_code)]

mod fill;
pub mod npy;
mod tensor;

pub use fill::{Fill, SplitMix64};
pub use tensor::{shape_string, Tensor, TensorError};
