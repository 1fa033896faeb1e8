//! `<output.dir>/losses.csv`: one row per step, appended as the run goes, so a crash loses at
//! most the rows after the last flush. On resume, rows past the resumed step (written after the
//! checkpoint the run continues from) are dropped, so the file tells one consistent history.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::Progress;
use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};

pub const HEADER: &str = "step,epoch,g_gan,g_l1,d_real,d_fake,lr,images_per_sec";

pub struct LossLog {
    path: PathBuf,
    file: std::fs::File,
}

fn row(p: &Progress) -> String {
    format!(
        "{},{},{},{},{},{},{},{}",
        p.step, p.epoch, p.g_gan, p.g_l1, p.d_real, p.d_fake, p.lr, p.images_per_sec
    )
}

fn parse_row(line: &str) -> Option<Progress> {
    let f: Vec<&str> = line.split(',').collect();
    if f.len() != 8 {
        return None;
    }
    Some(Progress {
        step: f[0].parse().ok()?,
        epoch: f[1].parse().ok()?,
        total_steps: 0,
        g_gan: f[2].parse().ok()?,
        g_l1: f[3].parse().ok()?,
        d_real: f[4].parse().ok()?,
        d_fake: f[5].parse().ok()?,
        lr: f[6].parse().ok()?,
        images_per_sec: f[7].parse().ok()?,
    })
}

/// The rows of a loss log (unreadable lines are ignored).
pub fn read(path: &Path) -> Vec<Progress> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().skip(1).filter_map(parse_row).collect())
        .unwrap_or_default()
}

impl LossLog {
    /// Starts the log: empty for a new run, the rows up to `resume_step` for a resumed one.
    /// Returns the log and the rows kept.
    pub fn open(path: &Path, resume_step: Option<u64>) -> Result<(Self, Vec<Progress>)> {
        let kept: Vec<Progress> = match resume_step {
            Some(step) => read(path).into_iter().filter(|p| p.step <= step).collect(),
            None => Vec::new(),
        };
        let mut text = format!("{HEADER}\n");
        for p in &kept {
            text.push_str(&row(p));
            text.push('\n');
        }
        write_atomic(path, text.as_bytes())?;
        let file =
            std::fs::OpenOptions::new().append(true).open(path).map_err(|e| Error::io(path, e))?;
        Ok((Self { path: path.to_path_buf(), file }, kept))
    }

    pub fn append(&mut self, p: &Progress) -> Result<()> {
        writeln!(self.file, "{}", row(p))
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::io(&self.path, e))
    }
}
