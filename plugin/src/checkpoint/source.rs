//! Where checkpoint bytes come from: a regular file opened without ever blocking, or memory.
//!
//! A model path may name anything the file system holds. Opening a FIFO for reading blocks until
//! a writer appears, `/dev/zero` never ends, a directory or a symlink loop cannot be read: each
//! is refused up front with the precise reason, before a byte is read.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// Positional reads from checkpoint bytes, so that readers never hold the whole file.
pub trait Source {
    /// Length in bytes.
    fn len(&self) -> u64;
    /// Fills `buf` from byte `offset`, or fails if the source ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

/// A regular file with its length taken once, at open.
pub struct RegularFile {
    pub file: File,
    len: u64,
}

impl Source for RegularFile {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, offset)
    }
}

impl Source for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let range = usize::try_from(offset)
            .ok()
            .and_then(|a| Some(a..a.checked_add(buf.len())?))
            .filter(|r| r.end <= <[u8]>::len(self));
        match range {
            Some(r) => {
                buf.copy_from_slice(&self[r]);
                Ok(())
            }
            None => {
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the data"))
            }
        }
    }
}

/// Why `kind` cannot be a checkpoint, or `None` for a regular file.
fn not_regular(kind: std::fs::FileType) -> Option<&'static str> {
    if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("is a directory, not a checkpoint file")
    } else if kind.is_fifo() {
        Some("is a FIFO (named pipe), not a regular file")
    } else if kind.is_char_device() {
        Some("is a character device, not a regular file")
    } else if kind.is_block_device() {
        Some("is a block device, not a regular file")
    } else if kind.is_socket() {
        Some("is a socket, not a regular file")
    } else {
        Some("is not a regular file")
    }
}

fn refuse(path: &Path, why: &str) -> Error {
    Error::io(path, io::Error::new(io::ErrorKind::InvalidInput, why))
}

/// The precise reason for a failed `stat`/`open`: a symlink loop is named as such.
fn io_error(path: &Path, e: io::Error) -> Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return refuse(path, "is a symbolic link loop (too many levels of symbolic links)");
    }
    Error::io(path, e)
}

/// Opens `path` for reading if, and only if, it is a regular file (symlinks followed).
///
/// The type is checked before opening (so a FIFO is never opened), and again on the open file
/// (so a path swapped in between is caught); `O_NONBLOCK` makes even that open return at once.
pub fn open_regular(path: &Path) -> Result<RegularFile> {
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, e))?;
    if let Some(why) = not_regular(meta.file_type()) {
        return Err(refuse(path, why));
    }
    // O_NONBLOCK changes nothing for reads of a regular file; it only keeps a FIFO from blocking.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if let Some(why) = not_regular(meta.file_type()) {
        return Err(refuse(path, why));
    }
    Ok(RegularFile { len: meta.len(), file })
}
