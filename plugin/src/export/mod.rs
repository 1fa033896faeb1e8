//! Models written for other runtimes: [`export_checkpoint`] (see [`onnx`] for what the graph holds).

pub mod onnx;
mod proto;

use std::io::Write;
use std::path::Path;

use crate::{infer_generator, Checkpoint, Error, NormStats, Result};

/// What [`export_checkpoint`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnnxSummary {
    pub net_g: String,
    pub ngf: usize,
    pub norm: &'static str,
    pub stride: usize,
    pub opset: i64,
    pub bytes: u64,
}

impl std::fmt::Display for OnnxSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (ngf {}, {} norm), ONNX opset {}, {} bytes; input and output NCHW float32 in [-1, 1], height and width multiples of {}",
            self.net_g, self.ngf, self.norm, self.opset, self.bytes, self.stride
        )
    }
}

/// Writes the generator in `ckpt` to `out` as an ONNX model normalising with `norm_stats`. The
/// file appears whole or not at all (a temporary sibling, then a rename); an existing `out` is
/// replaced only with `overwrite`. The faces reach it through `faces::api::export_onnx`.
pub fn export_checkpoint(
    ckpt: &Checkpoint,
    out: &Path,
    norm_stats: NormStats,
    overwrite: bool,
) -> Result<OnnxSummary> {
    check_output(out, overwrite)?;
    let config = infer_generator(ckpt)?;
    let bytes = onnx::generator_to_onnx(ckpt, config, norm_stats)?;
    write_new(out, &bytes, overwrite)?;
    Ok(OnnxSummary {
        net_g: config.net_g(),
        ngf: config.ngf(),
        norm: config.norm().name(),
        stride: config.stride(),
        opset: onnx::OPSET,
        bytes: bytes.len() as u64,
    })
}

pub fn check_output(out: &Path, overwrite: bool) -> Result<()> {
    if out.as_os_str().is_empty() {
        return Err(Error::invalid("output", "empty path"));
    }
    if out.is_dir() {
        return Err(Error::invalid(
            "output",
            format!("{} is a folder; name the .onnx file to write", out.display()),
        ));
    }
    if !overwrite && out.symlink_metadata().is_ok() {
        return Err(exists(out));
    }
    Ok(())
}

fn exists(out: &Path) -> Error {
    Error::io(
        out,
        std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "already exists (not replaced unless overwriting is asked for)",
        ),
    )
}

/// Writes `data` to a temporary sibling of `path`, syncs it, then moves it into place: by
/// rename with `overwrite`, else by a hard link, which fails rather than replace a file that
/// appeared meanwhile.
fn write_new(path: &Path, data: &[u8], overwrite: bool) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    let placed = if overwrite {
        std::fs::rename(&tmp, path)
    } else {
        match std::fs::hard_link(&tmp, path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_file(&tmp);
                return Err(exists(path));
            }
            // File systems without hard links: check, then rename (a narrow race, no torn file).
            Err(_) if path.symlink_metadata().is_err() => std::fs::rename(&tmp, path),
            other => other.and_then(|()| std::fs::remove_file(&tmp)),
        }
    };
    let _ = std::fs::remove_file(&tmp);
    placed.map_err(|e| Error::io(path, e))
}
