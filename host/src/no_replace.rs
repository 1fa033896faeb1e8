//! Renaming a file into place only if nothing is there, as one atomic step: `renameat2` with
//! `RENAME_NOREPLACE` (Linux), else a hard link (which fails if the name exists) and the
//! removal of the temporary name. Either way the destination appears whole or not at all, and
//! an existing destination is reported as `ErrorKind::AlreadyExists` and left untouched.

use std::io;
use std::path::Path;

pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    match linux::renameat2_noreplace(from, to) {
        Ok(()) => return Ok(()),
        // Filesystems (and kernels) without the flag: fall back to a link.
        Err(e)
            if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)) => {
        }
        Err(e) => return Err(e),
    }
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::CString;
    use std::io;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    fn c_path(p: &Path) -> io::Result<CString> {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
    }

    pub fn renameat2_noreplace(from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (c_path(from)?, c_path(to)?);
        // SAFETY: the raw syscall (glibc's wrapper is not in every libc) with two NUL-terminated
        // paths that outlive the call and the flag the kernel documents; it touches no memory
        // of ours besides reading the paths.
        let r = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_an_existing_destination_and_moves_otherwise() {
        let dir = std::env::temp_dir().join(format!("host-noreplace-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        assert_eq!(rename(&a, &b).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&b).unwrap(), b"b");
        rename(&a, &c).unwrap();
        assert!(!a.exists());
        assert_eq!(std::fs::read(&c).unwrap(), b"a");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
