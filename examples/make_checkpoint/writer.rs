//! Streaming shard writer: a producer fills fixed-size buffers with tensor bytes while a
//! writer thread writes the previous buffer, so memory stays at a few buffers.

use crate::model::TensorSpec;
use crate::shards::header;
use crate::values::Stream;
use anyhow::{Context, Result, anyhow};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::thread;

/// Size of each buffer handed to the writer thread.
const CHUNK: usize = 4 << 20;

/// A buffer and how many of its bytes are filled.
struct Chunk {
    data: Vec<u8>,
    len: usize,
}

/// Writes one safetensors file holding `tensors`, data in the order given.
pub fn write_shard(path: &Path, tensors: &[TensorSpec], seed: u64) -> Result<()> {
    let parts: Vec<Part> = tensors
        .iter()
        .map(|t| Part {
            tensor: t,
            bytes: 0..t.bytes(),
        })
        .collect();
    write_file(path, &header(tensors)?, &parts, seed)
}

/// A byte range of one tensor's row-major data (a rank's piece of it).
pub struct Part<'a> {
    /// The tensor.
    pub tensor: &'a TensorSpec,
    /// The range of its bytes.
    pub bytes: std::ops::Range<u64>,
}

/// Writes `header`, then the bytes of `parts` in order.
pub fn write_file(path: &Path, header: &[u8], parts: &[Part], seed: u64) -> Result<()> {
    let mut file =
        File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(header)
        .with_context(|| format!("cannot write the header of {}", path.display()))?;
    let (full_tx, full_rx) = sync_channel::<Chunk>(1);
    let (empty_tx, empty_rx) = channel::<Chunk>();
    for _ in 0..2 {
        empty_tx.send(Chunk {
            data: vec![0; CHUNK],
            len: 0,
        })?;
    }
    thread::scope(|scope| {
        let writer = scope.spawn(move || drain(file, full_rx, empty_tx));
        let produced = produce(parts, seed, &empty_rx, full_tx);
        let written = writer
            .join()
            .map_err(|_| anyhow!("the writer thread panicked"))?;
        written
            .and(produced)
            .with_context(|| format!("cannot write {}", path.display()))
    })
}

/// Writes each full buffer to `file` and hands it back for reuse.
fn drain(mut file: File, full: Receiver<Chunk>, empty: Sender<Chunk>) -> Result<()> {
    for chunk in full {
        file.write_all(&chunk.data[..chunk.len])?;
        // The producer may have stopped already; then the buffer is simply dropped.
        let _ = empty.send(chunk);
    }
    file.flush()?;
    Ok(())
}

/// Generates every part's bytes into buffers and sends them to the writer in order.
fn produce(
    parts: &[Part],
    seed: u64,
    empty: &Receiver<Chunk>,
    full: SyncSender<Chunk>,
) -> Result<()> {
    let stopped = || anyhow!("the writer thread stopped early");
    let mut chunk = empty.recv().map_err(|_| stopped())?;
    for part in parts {
        let stream = Stream::new(seed, &part.tensor.name, part.tensor.dtype);
        let (start, size) = (
            part.bytes.start as usize,
            (part.bytes.end - part.bytes.start) as usize,
        );
        let mut offset = 0;
        while offset < size {
            let n = (CHUNK - chunk.len).min(size - offset);
            stream.fill(start + offset, &mut chunk.data[chunk.len..chunk.len + n]);
            chunk.len += n;
            offset += n;
            if chunk.len == CHUNK {
                full.send(chunk).map_err(|_| stopped())?;
                chunk = empty.recv().map_err(|_| stopped())?;
                chunk.len = 0;
            }
        }
    }
    if chunk.len > 0 {
        full.send(chunk).map_err(|_| stopped())?;
    }
    Ok(())
}
