//! Why a path given as a model or an input cannot be read as a file, in one precise phrase:
//! missing, a folder, a named pipe (which would block a reader forever), a device such as
//! `/dev/zero` (endless), a symbolic-link loop, no permission.

use std::io::ErrorKind;
use std::path::Path;

/// `Ok` for a regular file (after symbolic links), else the reason it is not one.
pub fn regular_file(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(m) => Err(kind_of(&m).to_string()),
        Err(e) => Err(io_reason(path, &e)),
    }
}

fn kind_of(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_dir() {
        "is a folder, not a file"
    } else if t.is_fifo() {
        "is a named pipe (FIFO), not a regular file"
    } else if t.is_char_device() {
        "is a character device, not a regular file"
    } else if t.is_block_device() {
        "is a block device, not a regular file"
    } else if t.is_socket() {
        "is a socket, not a regular file"
    } else {
        "is not a regular file"
    }
}

/// A metadata error as a reason.
pub fn io_reason(path: &Path, e: &std::io::Error) -> String {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return "a loop of symbolic links".into();
    }
    match e.kind() {
        ErrorKind::NotFound if path.symlink_metadata().is_ok() => {
            "a symbolic link to nothing (its target does not exist)".into()
        }
        ErrorKind::NotFound => "no such file".into(),
        ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_gets_its_reason() {
        let dir = std::env::temp_dir().join(format!("host-file-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.join("loop"), dir.join("loop")).unwrap();
        std::os::unix::fs::symlink(dir.join("gone"), dir.join("dangling")).unwrap();
        assert_eq!(regular_file(&dir.join("f")), Ok(()));
        assert_eq!(regular_file(&dir).unwrap_err(), "is a folder, not a file");
        assert_eq!(
            regular_file(Path::new("/dev/zero")).unwrap_err(),
            "is a character device, not a regular file"
        );
        assert_eq!(regular_file(&dir.join("loop")).unwrap_err(), "a loop of symbolic links");
        assert_eq!(
            regular_file(&dir.join("dangling")).unwrap_err(),
            "a symbolic link to nothing (its target does not exist)"
        );
        assert_eq!(regular_file(&dir.join("missing")).unwrap_err(), "no such file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
