//! What a run leaves in the page cache: an input that was not cached when nemoconv read it is
//! dropped again once used, so a checkpoint larger than memory does not push out everything
//! else; an input that was cached stays cached, so a warm checkpoint stays warm.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::builder::{CheckpointBuilder, Files};
use crate::harness::{
    assert_same_tensors, from_hf, nemoconv, read_checkpoint, shard_files, tempdir,
};

/// A checkpoint of a few MiB, so that its pages are counted, not rounded away.
fn checkpoint(dir: &Path) -> Vec<PathBuf> {
    let builder = CheckpointBuilder {
        n_experts: 8,
        inter: 256,
        hidden: 512,
        vocab: 1024,
        ..CheckpointBuilder::default()
    };
    builder.build().write(dir, Files::Indexed(2));
    shard_files(dir)
}

/// Pages of `path` in the page cache, and all its pages.
fn resident_pages(path: &Path) -> (usize, usize) {
    let file = File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    // SAFETY: a read-only map of a file nobody writes during the test, never dereferenced.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let page = 4096;
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: the map is page-aligned and `vec` has one byte per page.
    let rc = unsafe { libc::mincore(map.as_ptr() as *mut _, len, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore {}", path.display());
    (vec.iter().filter(|&&b| b & 1 == 1).count(), vec.len())
}

/// Writes `path` back to disk and drops it from the page cache, as after a reboot.
fn make_cold(path: &Path) {
    let file = File::open(path).unwrap();
    file.sync_all().unwrap();
    // SAFETY: posix_fadvise only reads the descriptor and integers.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
}

#[test]
fn input_read_from_disk_is_dropped_from_the_page_cache_after_use() {
    let tmp = tempdir();
    let input = tmp.path().join("in");
    let shards = checkpoint(&input);
    for s in &shards {
        make_cold(s);
        let (resident, _) = resident_pages(s);
        assert!(
            resident <= 2,
            "{} still cached: {resident} pages",
            s.display()
        );
    }
    // Not through `from_hf`: its digest of the input would read it all first.
    let cold_out = tmp.path().join("cold");
    nemoconv(&[
        OsStr::new("from-hf"),
        input.as_os_str(),
        cold_out.as_os_str(),
    ])
    .success();
    for s in &shards {
        let (resident, all) = resident_pages(s);
        assert!(
            resident * 4 < all,
            "{}: {resident} of {all} pages left in the page cache after a cold run",
            s.display()
        );
    }
    let warm_out = tmp.path().join("warm");
    from_hf(&[], &input, &warm_out).success();
    assert_same_tensors(&read_checkpoint(&cold_out), &read_checkpoint(&warm_out));
}

#[test]
fn input_that_was_cached_stays_cached() {
    let tmp = tempdir();
    let input = tmp.path().join("in");
    let shards = checkpoint(&input);
    for s in &shards {
        std::fs::read(s).unwrap();
    }
    from_hf(&[], &input, &tmp.path().join("out")).success();
    for s in &shards {
        let (resident, all) = resident_pages(s);
        assert_eq!(resident, all, "{}: a warm input was dropped", s.display());
    }
}
