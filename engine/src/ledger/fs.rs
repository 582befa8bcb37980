//! The file layer under the journal: a directory of append-only files. The
//! real one is `std::fs`; tests put a fault-injecting one in its place
//! (tests/ledger_faults.rs) to check that a short write, a failed write or
//! a failed sync stops the ledger and is never retried or ignored.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One append-only journal file.
pub trait LogFile: Send + Sync {
    /// One `write(2)`: may write less than `buf` (a short write).
    fn write(&self, buf: &[u8]) -> io::Result<usize>;
    /// `fdatasync(2)`.
    fn sync_data(&self) -> io::Result<()>;
}

/// The directory the journal files live in.
pub trait LogDir: Send + Sync {
    /// Creates a new, empty file (an existing one with that name is an error).
    fn create(&self, name: &str) -> io::Result<Arc<dyn LogFile>>;
    /// Makes created and removed names durable (`fsync` of the directory).
    fn sync_dir(&self) -> io::Result<()>;
    fn remove(&self, name: &str) -> io::Result<()>;
}

/// Writes all of `buf`, continuing after short writes and EINTR. Any error
/// is returned at once: the caller stops the ledger (never retries).
pub fn write_all(f: &dyn LogFile, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match f.write(buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the journal file accepted no bytes",
                ))
            }
            Ok(n) => buf = &buf[n.min(buf.len())..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl LogFile for File {
    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut f: &File = self;
        Write::write(&mut f, buf)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
}

/// The real directory.
pub struct FsDir {
    path: PathBuf,
}

impl FsDir {
    pub fn new(path: &Path) -> FsDir {
        FsDir {
            path: path.to_path_buf(),
        }
    }
}

impl LogDir for FsDir {
    fn create(&self, name: &str) -> io::Result<Arc<dyn LogFile>> {
        let f = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(self.path.join(name))?;
        Ok(Arc::new(f))
    }

    fn sync_dir(&self) -> io::Result<()> {
        sync_dir(&self.path)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.path.join(name))
    }
}

/// `fsync` of a directory, so the names in it survive a power cut.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Writes `bytes` to `path` atomically and durably: a temporary file,
/// fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}
