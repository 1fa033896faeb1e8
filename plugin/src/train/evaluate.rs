//! The reference's evaluation protocol (`train_ref.py`'s `evaluate`): every test pair resized
//! to `size` × `size` (bicubic), the generator run as the model is opened (the protocol wants
//! batch statistics and dropout off: `Options { norm_stats: Batch, dropout_seed: None }`, the
//! default), and MAE, PSNR and SSIM on uint8 RGB averaged over the pairs. Optionally an HTML
//! page of input | output | target rows with each pair's figures, and with a segmenter the
//! label-consistency score ([`super::label_score`]) of the outputs and of the real targets.

use std::fmt::Write as _;
use std::path::Path;

use image::RgbImage;

use super::data::{gray_if, Dataset};
use super::label_score::Segmenter;
use super::metrics::{mae, psnr, ssim};
use super::preprocess::resize;
use super::samples::write_png;
use super::{Direction, Metrics};
use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};
use crate::filter::image_tensor::{tensor_to_rgb, u8_to_tensor_channels};
use crate::filter::model::Model;

struct Row {
    name: String,
    mae: f64,
    psnr: f64,
    ssim: f64,
    /// Label MAE of the output and of the real target, with a segmenter.
    label: Option<(f64, f64)>,
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A file-name-safe form of a pair's path relative to the data folder.
fn slug(data: &Path, p: &Path) -> String {
    let rel = p.strip_prefix(data).unwrap_or(p).with_extension("");
    rel.to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect()
}

#[allow(clippy::manual_is_multiple_of)] // `is_multiple_of` is newer than the MSRV (1.85)
pub fn evaluate(
    model: &Model,
    data: &Path,
    direction: Direction,
    size: usize,
    html_dir: Option<&Path>,
    segmenter: Option<&Segmenter>,
) -> Result<Metrics> {
    let stride = model.config().stride();
    if size == 0 || size % stride != 0 {
        return Err(Error::invalid(
            "size",
            format!(
                "{size} is not a positive multiple of {stride}, the input side {} needs",
                model.config().net_g()
            ),
        ));
    }
    // Every pair runs at size × size: one check of the model's memory budget covers them.
    model.check_memory(size, size, 1)?;
    let ds = Dataset::aligned(data, direction)?;
    let (in_nc, out_nc) = model.config().channels();
    if let Some(dir) = html_dir {
        std::fs::create_dir_all(dir.join("images")).map_err(|e| Error::io(dir, e))?;
    }
    let s = size as u32;
    let mut rows = Vec::with_capacity(ds.len());
    for (i, source) in ds.sources.iter().enumerate() {
        let (input_half, target_half) = ds.load(i)?;
        // A 1-channel side is read as gray (replicated to RGB for the metrics and the page).
        let (input, target) =
            (gray_if(input_half.clone(), in_nc), gray_if(target_half.clone(), out_nc));
        let (input, target) = (resize(&input, s, s), resize(&target, s, s));
        let x = u8_to_tensor_channels(input.as_raw(), 3, size, size, in_nc)?;
        // 8-bit, as a saved output would be: the label score reads it as such.
        let (out, _, _) = tensor_to_rgb(&model.forward(&x)?)?;
        let output =
            RgbImage::from_raw(s, s, out).ok_or_else(|| Error::invalid("image", "output size"))?;
        let out = output.as_raw();
        // The input is the label map, the target the real photo; the label score compares with
        // the halves as read (label_score.py's `halves`), not resized to `size`.
        let label = match segmenter {
            Some(seg) => Some((
                seg.label_mae(&output, &input_half)?,
                seg.label_mae(&target_half, &input_half)?,
            )),
            None => None,
        };
        let row = Row {
            name: source.path().strip_prefix(data).unwrap_or(source.path()).display().to_string(),
            mae: mae(out, target.as_raw()),
            psnr: psnr(target.as_raw(), out),
            ssim: ssim(target.as_raw(), out, size, size)?,
            label,
        };
        if let Some(dir) = html_dir {
            let stem = format!("{i:04}_{}", slug(data, source.path()));
            for (kind, img) in [("input", &input), ("output", &output), ("target", &target)] {
                write_png(&dir.join("images").join(format!("{stem}_{kind}.png")), img)?;
            }
        }
        rows.push(row);
    }
    let n = rows.len() as f64;
    let metrics = Metrics {
        mae: rows.iter().map(|r| r.mae).sum::<f64>() / n,
        psnr: rows.iter().map(|r| r.psnr).sum::<f64>() / n,
        ssim: rows.iter().map(|r| r.ssim).sum::<f64>() / n,
        count: rows.len(),
        label_score: segmenter
            .map(|_| rows.iter().filter_map(|r| r.label).map(|l| l.0).sum::<f64>() / n),
        real_label_score: segmenter
            .map(|_| rows.iter().filter_map(|r| r.label).map(|l| l.1).sum::<f64>() / n),
    };
    if let Some(dir) = html_dir {
        write_html(dir, data, model, direction, size, &rows, &metrics, &ds)?;
    }
    Ok(metrics)
}

#[allow(clippy::too_many_arguments)]
fn write_html(
    dir: &Path,
    data: &Path,
    model: &Model,
    direction: Direction,
    size: usize,
    rows: &[Row],
    m: &Metrics,
    ds: &Dataset,
) -> Result<()> {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>pix2pix evaluation</title>\n\
         <style>body{{font-family:sans-serif}} td{{padding:4px;vertical-align:middle}} img{{width:{size}px;height:{size}px}}</style></head><body>\n\
         <h1>pix2pix evaluation</h1>\n<p>model: {}<br>data: {} ({}, {size}×{size}, {} pairs{})<br>\
         MAE {:.3} · PSNR {:.3} dB · SSIM {:.4}{}</p>\n<table>\n<tr><th>pair</th><th>input</th><th>output</th><th>target</th><th>MAE</th><th>PSNR</th><th>SSIM</th>{}</tr>\n",
        html_escape(model.source()),
        html_escape(&data.display().to_string()),
        direction.name(),
        m.count,
        if ds.skipped.is_empty() { String::new() } else { format!(", {} skipped", ds.skipped.len()) },
        m.mae,
        m.psnr,
        m.ssim,
        match (m.label_score, m.real_label_score) {
            (Some(g), Some(r)) => format!(" · label score {g:.3} (real photos {r:.3}; lower is better)"),
            _ => String::new(),
        },
        if m.label_score.is_some() { "<th>label</th><th>real label</th>" } else { "" },
    );
    for (i, (r, source)) in rows.iter().zip(&ds.sources).enumerate() {
        let stem = format!("{i:04}_{}", slug(data, source.path()));
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td><img src=\"images/{stem}_input.png\"></td><td><img src=\"images/{stem}_output.png\"></td>\
             <td><img src=\"images/{stem}_target.png\"></td><td>{:.2}</td><td>{:.2}</td><td>{:.4}</td>{}</tr>",
            html_escape(&r.name),
            r.mae,
            r.psnr,
            r.ssim,
            r.label.map_or(String::new(), |(g, real)| format!("<td>{g:.2}</td><td>{real:.2}</td>")),
        );
    }
    h.push_str("</table>\n</body></html>\n");
    write_atomic(&dir.join("index.html"), h.as_bytes())
}
