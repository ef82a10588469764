//! Fault injection for tests of failure handling (an fsync that fails), compiled in only with
//! the `failpoints` feature. Without it, the log's fsync is a plain `fdatasync`.

use std::fs::File;
use std::io;
use std::path::Path;

#[cfg(feature = "failpoints")]
static FSYNC_FAILURES: std::sync::Mutex<Vec<(std::path::PathBuf, u32)>> = std::sync::Mutex::new(Vec::new());

/// Makes the next `n` data fsyncs of files under `dir` fail with an I/O error.
#[cfg(feature = "failpoints")]
pub fn fail_next_fsyncs(dir: &Path, n: u32) {
    FSYNC_FAILURES.lock().unwrap().push((dir.to_path_buf(), n));
}

/// `fdatasync` of `file` (at `path`), unless a failure was injected.
pub(crate) fn fsync(file: &File, path: &Path) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    {
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
