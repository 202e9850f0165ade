//! nemoconv converts NVIDIA Nemotron 3 (NemotronV3, `model_type: nemotron_h`) checkpoints
//! between the HuggingFace layout and NeMo Automodel's internal layout, byte for byte as the
//! reference adapter does, streaming in bounded memory.
//!
//! The work goes read → plan → execute: [`catalog`] describes the input tensors, a
//! [`family`] turns them into a [`plan::Plan`] of output tensors and recipes, and
//! [`execute`] writes them in parallel into an output that appears only when complete.
//!
//! ```
//! use std::path::PathBuf;
//! use std::sync::atomic::AtomicBool;
//! use nemoconv::{FromHfOptions, NoProgress, ToHfOptions, convert};
//!
//! let work = std::env::temp_dir().join(format!("nemoconv-doc-{}", std::process::id()));
//! let (internal, hf) = (work.join("internal"), work.join("hf"));
//! let stop = AtomicBool::new(false);
//! let input = [PathBuf::from("fixtures/golden/tiny/hf")];
//! let from_hf = FromHfOptions::default().into();
//! let report = convert(&input, &internal, &from_hf, &NoProgress, &stop)?;
//! assert_eq!(report.summary.tensors, 43);
//! convert(&[internal], &hf, &ToHfOptions::default().into(), &NoProgress, &stop)?;
//! # std::fs::remove_dir_all(&work).unwrap();
//! # Ok::<(), nemoconv::Error>(())
//! ```
//!
//! The default `cli` feature builds the `nemoconv` binary and its dependencies (clap,
//! indicatif, ctrlc, anyhow); `default-features = false` gives the library alone.
//!
//! Linux only: the executor and the reader use `pread`/`pwrite`, `posix_fadvise`,
//! `posix_fallocate`, `copy_file_range` and `sync_file_range`. Another Unix would need
//! plain fallbacks for the last three (a buffered copy, `ftruncate`, nothing); Windows
//! would also need positioned I/O through `FileExt::seek_read`/`seek_write`.
#![warn(missing_docs)]

pub mod catalog;
pub mod config;
pub mod consolidate;
pub mod convert;
pub mod dtype;
pub mod error;
pub mod execute;
pub mod family;
pub mod inspect;
pub mod json;
pub mod options;
pub mod plan;
pub mod verify;

#[cfg(test)]
pub(crate) mod testing;

pub use convert::{Direction, Report, convert, plan};
pub use error::{Error, Result};
pub use execute::{NoProgress, Progress, Summary};
pub use options::{ConsolidateOptions, ConvertOptions, FromHfOptions, ToHfOptions};
