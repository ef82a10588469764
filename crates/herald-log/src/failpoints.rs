//! Fault injection for tests of failure handling (an fsync that fails, a full disk), compiled in
//! only with the `failpoints` feature. Without it, these are plain `fdatasync` and `pwrite`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

#[cfg(feature = "failpoints")]
static FSYNC_FAILURES: std::sync::Mutex<Vec<(std::path::PathBuf, u32)>> = std::sync::Mutex::new(Vec::new());
#[cfg(feature = "failpoints")]
static FULL_DISKS: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Makes the next `n` data fsyncs of files under `dir` fail with an I/O error.
#[cfg(feature = "failpoints")]
pub fn fail_next_fsyncs(dir: &Path, n: u32) {
    FSYNC_FAILURES.lock().unwrap().push((dir.to_path_buf(), n));
}

/// While `full`, every data write and fsync of the log under `dir` fails with `ENOSPC`
/// (`io::ErrorKind::StorageFull`), as on a full disk.
#[cfg(feature = "failpoints")]
pub fn set_disk_full(dir: &Path, full: bool) {
    let mut disks = FULL_DISKS.lock().unwrap();
    disks.retain(|d| d != dir);
    if full {
        disks.push(dir.to_path_buf());
    }
}

#[cfg(feature = "failpoints")]
fn disk_full(path: &Path) -> io::Result<()> {
    if FULL_DISKS.lock().unwrap().iter().any(|d| path.starts_with(d)) {
        return Err(io::Error::from(io::ErrorKind::StorageFull));
    }
    Ok(())
}

/// `fdatasync` of `file` (at `path`), unless a failure was injected.
pub(crate) fn fsync(file: &File, path: &Path) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    {
        disk_full(path)?;
        let mut failures = FSYNC_FAILURES.lock().unwrap();
        if let Some(f) = failures.iter_mut().find(|(dir, n)| *n > 0 && path.starts_with(dir)) {
            f.1 -= 1;
            return Err(io::Error::other("injected fsync failure"));
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = path;
    file.sync_data()
}

/// `pwrite` of all of `buf` at `pos` of `file` (at `path`), unless a full disk was injected.
pub(crate) fn write_all_at(file: &File, path: &Path, buf: &[u8], pos: u64) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    disk_full(path)?;
    #[cfg(not(feature = "failpoints"))]
    let _ = path;
    file.write_all_at(buf, pos)
}
