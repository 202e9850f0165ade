//! nemoconv converts NVIDIA Nemotron 3 (NemotronV3, `model_type: nemotron_h`) checkpoints
//! between the HuggingFace layout and NeMo Automodel's internal layout, byte for byte as the
//! reference adapter does, streaming in bounded memory.
//!
//! The work goes read → plan → execute: [`catalog`] describes the input tensors, a
//! [`family`] turns them into a [`plan::Plan`] of output tensors and recipes, and
//! [`execute`] writes them in parallel into an output that appears only when complete.
//!
//! ```no_run
//! use std::path::Path;
//! use std::sync::atomic::AtomicBool;
//! use nemoconv::{Direction, NoProgress, Options, convert};
//!
//! let options = Options::default();
//! let stop = AtomicBool::new(false);
//! convert(Direction::FromHf, Path::new("ckpt/"), Path::new("internal/"), &options, &NoProgress, &stop)?;
//! convert(Direction::ToHf, Path::new("internal/"), Path::new("hf/"), &options, &NoProgress, &stop)?;
//! # Ok::<(), nemoconv::Error>(())
//! ```
#![warn(missing_docs)]

pub mod catalog;
pub mod config;
pub mod convert;
pub mod dtype;
pub mod error;
pub mod execute;
pub mod family;
pub mod options;
pub mod plan;

pub use convert::{Direction, Report, convert, plan};
pub use error::{Error, Result};
pub use execute::{NoProgress, Progress, Summary};
pub use options::Options;
