//! What is wrong with one tensor, as typed values that [`crate::Error`]'s variants carry
//! beside the file and tensor they name.

use crate::dtype::Dtype;
pub use crate::family::problems::{
    DequantProblem, ExpectedMerged, ExpertProblem, Fp8Scale, QuantSign,
};

/// What shows that an input is in the other layout than the command converts from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutEvidence {
    /// Its shards record the internal layout.
    #[error("its shards are marked as internal layout")]
    MarkedInternal,
    /// Its shards record the HF layout.
    #[error("its shards are marked as HF layout")]
    MarkedHf,
    /// A tensor has an internal name.
    #[error("tensor {0:?} is in the internal layout")]
    InternalTensor(String),
    /// A tensor has an HF name.
    #[error("tensor {0:?} has an HF name")]
    HfTensor(String),
}

/// How a piece of a split tensor differs from its first piece.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PieceDifference {
    /// Another dtype.
    #[error("its piece here is {dtype}, a different dtype ({first})")]
    Dtype {
        /// This piece's dtype.
        dtype: Dtype,
        /// The first piece's dtype.
        first: Dtype,
    },
    /// Another number of dims.
    #[error("its piece here has {dims} dims, a different rank ({first})")]
    Rank {
        /// This piece's dims.
        dims: usize,
        /// The first piece's dims.
        first: usize,
    },
}
