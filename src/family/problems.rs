//! What is wrong with the experts or the quantization of an input, in the family's words
//! (projection and scale names): typed values that [`crate::Error`]'s variants carry.

use crate::dtype::Dtype;

/// Why the experts of one group cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExpertProblem {
    /// The matrix lacks `moe_intermediate_size` where its projection needs it.
    #[error(
        "shape [{rows}, {cols}] does not have moe_intermediate_size ({inter}) where a {proj} expert needs it; fix config.json"
    )]
    NoIntermediateDim {
        /// Rows.
        rows: u64,
        /// Columns.
        cols: u64,
        /// `moe_intermediate_size`.
        inter: u64,
        /// `up_proj` or `down_proj`.
        proj: &'static str,
    },
    /// Its hidden width differs from the layer's `up_proj` experts.
    #[error("its width {width} differs from the layer's up_proj experts ({up_width})")]
    Width {
        /// This group's width.
        width: u64,
        /// The `up_proj` group's width.
        up_width: u64,
    },
    /// An expert tensor that is not a matrix.
    #[error("an expert matrix must be 2-D, found shape {shape:?}")]
    NotAMatrix {
        /// Its shape.
        shape: Vec<u64>,
    },
    /// An expert whose dtype or shape differs from the group's first.
    #[error(
        "{dtype:?} {shape:?} differs from {first_dtype:?} {first_shape:?} of {first:?}; all experts of a layer must agree"
    )]
    Differs {
        /// Its dtype.
        dtype: Dtype,
        /// Its shape.
        shape: Vec<u64>,
        /// The first expert's dtype.
        first_dtype: Dtype,
        /// The first expert's shape.
        first_shape: Vec<u64>,
        /// The first expert's name.
        first: String,
    },
}

/// Why a quantized tensor cannot be dequantized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DequantProblem {
    /// NVFP4, which nemoconv does not unpack.
    #[error(
        "NVFP4 (U8-packed FP4 with weight_scale_2) cannot be dequantized by nemoconv; dequantize it with ModelOpt first"
    )]
    Nvfp4,
    /// An FP8 format that nemoconv cannot cast (only E4M3 and E5M2 are read).
    #[error("{dtype:?} weights cannot be dequantized by nemoconv (it reads F8_E4M3 and F8_E5M2)")]
    Fp8Format {
        /// The weight's dtype.
        dtype: Dtype,
    },
    /// An FP8 weight without any scale.
    #[error("FP8 weight without weight_scale or weight_scale_inv; cannot dequantize it")]
    NoScale,
    /// A block scale whose shape does not fit the weight and block.
    #[error("its weight_scale_inv has shape {shape:?}, expected {expected:?} for {block:?} blocks")]
    BlockScaleShape {
        /// The scale's shape.
        shape: Vec<u64>,
        /// The shape the weight and block need.
        expected: [u64; 2],
        /// The block.
        block: [u64; 2],
    },
    /// A scale that is neither per-tensor nor per-row.
    #[error(
        "its weight_scale has shape {shape:?}; nemoconv dequantizes per-tensor or per-row scales"
    )]
    ScaleShape {
        /// The scale's shape.
        shape: Vec<u64>,
    },
    /// A scale of a dtype nemoconv does not read.
    #[error("its scale {scale:?} is {dtype:?}; nemoconv reads F32, BF16 or F16 scales")]
    ScaleDtype {
        /// The scale tensor.
        scale: String,
        /// Its dtype.
        dtype: Dtype,
    },
}

/// The shape a merged expert tensor must have (SPEC §4.5); the hidden width is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedMerged {
    /// `down_projs`: `[n, I, *]`.
    Down {
        /// Experts in the tensor.
        n_experts: u64,
        /// `moe_intermediate_size`.
        inter: u64,
    },
    /// `gate_and_up_projs`: `[n, *, I]`.
    GateAndUp {
        /// Experts in the tensor.
        n_experts: u64,
        /// `moe_intermediate_size`.
        inter: u64,
    },
}

impl std::fmt::Display for ExpectedMerged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedMerged::Down { n_experts, inter } => write!(
                f,
                "[{n_experts}, {inter}, *] (experts, moe_intermediate_size, hidden)"
            ),
            ExpectedMerged::GateAndUp { n_experts, inter } => write!(
                f,
                "[{n_experts}, *, {inter}] (experts, hidden, moe_intermediate_size)"
            ),
        }
    }
}

/// What shows that a checkpoint is quantized (the first sign found refuses a conversion).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuantSign {
    /// An FP8 weight, with the scale beside it that tells its scheme.
    #[error("{dtype:?} {scale}")]
    Fp8 {
        /// The weight's dtype.
        dtype: Dtype,
        /// Its scale.
        scale: Fp8Scale,
    },
    /// A U8 weight with a `weight_scale_2`: NVFP4.
    #[error("U8-packed NVFP4 weights with weight_scale_2")]
    Nvfp4,
    /// A ModelOpt scale tensor.
    #[error("a ModelOpt quantization scale")]
    Scale,
    /// config.json has a `quantization_config`.
    #[error("config.json declares a quantization_config")]
    DeclaredInConfig,
    /// A ModelOpt quantization config file lies beside the shards.
    #[error("a ModelOpt quantization config")]
    QuantConfigFile,
}

/// The scale an FP8 weight comes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Fp8Scale {
    /// `weight_scale_inv`: block FP8.
    #[error("block-FP8 weights with weight_scale_inv")]
    BlockInv,
    /// `weight_scale`: ModelOpt per-tensor FP8.
    #[error("ModelOpt FP8 weights with a per-tensor weight_scale")]
    PerTensor,
    /// No scale at all.
    #[error("FP8 weights without scales")]
    None,
}
