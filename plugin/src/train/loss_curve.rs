//! `loss_curve.png`: a run's losses and learning rate over the steps, drawn with `plotters`
//! (bitmap backend; text in DejaVu Sans embedded in the library, so no system font is needed).
//!
//! Three panels over one step axis: the generator's λ·L1 term (its scale is tens, the others'
//! about one), the adversarial terms G_GAN, D_real and D_fake, and the learning rate. Each loss
//! is drawn per step (thin, light) and as a centred moving average (bold); the y range follows
//! the bulk of the values (2nd to 98th percentile, and the whole moving average), so the first
//! steps' spikes do not flatten the rest, with room above for the legend.

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::samples::write_png;
use super::Progress;
use crate::error::{Error, Result};

/// The image size.
pub const WIDTH: u32 = 1000;
pub const HEIGHT: u32 = 760;

/// DejaVu Sans 2.37 (Bitstream Vera licence, `plugin/assets/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

const L1_COLOUR: RGBColor = RGBColor(40, 40, 40);
const G_GAN_COLOUR: RGBColor = RGBColor(214, 39, 40);
const D_REAL_COLOUR: RGBColor = RGBColor(44, 160, 44);
const D_FAKE_COLOUR: RGBColor = RGBColor(31, 119, 180);
const LR_COLOUR: RGBColor = RGBColor(148, 103, 189);

fn register() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    if *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok()) {
        Ok(())
    } else {
        Err(Error::invalid("font", "the embedded DejaVu Sans could not be parsed"))
    }
}

/// Centred moving average over `2·half + 1` steps (finite values only; NaN where none).
fn smooth(values: &[f32], half: usize) -> Vec<f32> {
    (0..values.len())
        .map(|i| {
            let w = values[i.saturating_sub(half)..(i + half + 1).min(values.len())]
                .iter()
                .filter(|v| v.is_finite());
            let (s, n) = w.fold((0f64, 0usize), |(s, n), v| (s + *v as f64, n + 1));
            if n > 0 {
                (s / n as f64) as f32
            } else {
                f32::NAN
            }
        })
        .collect()
}

/// The value below which a fraction `q` of the finite `values` lie.
fn quantile(values: impl Iterator<Item = f32>, q: f64) -> Option<f64> {
    let mut v: Vec<f32> = values.filter(|v| v.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f32::total_cmp);
    Some(v[((v.len() - 1) as f64 * q).round() as usize] as f64)
}

/// A y range holding the bulk of the raw values and all of the smoothed ones, padded by 5 %
/// below and by `headroom` (a fraction of the span) above, where the legend goes.
fn y_range(raw: &[&[f32]], smoothed: &[Vec<f32>], headroom: f64) -> Range<f64> {
    let all = || raw.iter().flat_map(|s| s.iter().copied());
    let (lo, hi) = (quantile(all(), 0.02), quantile(all(), 0.98));
    let s = smoothed.iter().flatten().filter(|v| v.is_finite()).map(|&v| v as f64);
    let (s_lo, s_hi) = s.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = match (lo, hi) {
        (Some(lo), Some(hi)) => (lo.min(s_lo), hi.max(s_hi)),
        _ => (0.0, 1.0),
    };
    let span = (hi - lo).max(1e-3);
    (lo - 0.05 * span)..(hi + headroom * span)
}

/// Tick labels with as many decimals as the range needs.
fn tick_label(range: &Range<f64>) -> impl Fn(&f64) -> String {
    let span = (range.end - range.start).abs().max(1e-12);
    let decimals = (2.0 - span.log10().floor()).clamp(0.0, 6.0) as usize;
    move |v| format!("{v:.decimals$}")
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Image { path: path.into(), msg: format!("cannot draw the loss curve: {e}") }
}

/// `c` two thirds of the way to white.
fn pale(c: RGBColor) -> RGBColor {
    let f = |v: u8| ((v as u16 + 2 * 255) / 3) as u8;
    RGBColor(f(c.0), f(c.1), f(c.2))
}

/// A series and how to draw it.
struct Series<'a> {
    name: &'static str,
    values: &'a [f32],
    colour: RGBColor,
}

/// Draws one loss panel: every series per step (light) and smoothed (bold, in the legend).
fn loss_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x: Range<f64>,
    steps: &[f64],
    series: &[Series],
    half: usize,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let smoothed: Vec<Vec<f32>> = series.iter().map(|s| smooth(s.values, half)).collect();
    let raw: Vec<&[f32]> = series.iter().map(|s| s.values).collect();
    // Room above the data for the legend's rows.
    let y = y_range(&raw, &smoothed, 0.1 + 0.1 * series.len() as f64);
    let label = tick_label(&y);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 17))
        .margin_left(12)
        .margin_right(24)
        .margin_top(6)
        .x_label_area_size(34)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&label)
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 14))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()?;
    let points = |v: &[f32]| -> Vec<(f64, f64)> {
        steps.iter().zip(v).filter(|(_, v)| v.is_finite()).map(|(&s, &v)| (s, v as f64)).collect()
    };
    // Opaque pale colours, not transparency: thousands of overlapping steps stay a pale band
    // under the moving average instead of adding up to full colour.
    for s in series {
        chart.draw_series(LineSeries::new(points(s.values), pale(s.colour).stroke_width(1)))?;
    }
    for (s, sm) in series.iter().zip(&smoothed) {
        let colour = s.colour;
        chart
            .draw_series(LineSeries::new(points(sm), colour.stroke_width(2)))?
            .label(s.name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], colour.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .draw()
}

/// The learning rate each step trained with.
fn lr_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    x: Range<f64>,
    steps: &[f64],
    lr: &[f64],
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let top = lr.iter().copied().filter(|v| v.is_finite()).fold(0.0, f64::max);
    let top = if top > 0.0 { top * 1.1 } else { 1e-3 };
    let mut chart = ChartBuilder::on(area)
        .caption("Learning-rate schedule", (FAMILY, 17))
        .margin_left(12)
        .margin_right(24)
        .margin_top(6)
        .x_label_area_size(34)
        .y_label_area_size(70)
        .build_cartesian_2d(x, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("lr")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| if *v == 0.0 { "0".into() } else { format!("{v:.1e}") })
        .y_labels(4)
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 14))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()?;
    let points = steps.iter().zip(lr).filter(|(_, v)| v.is_finite()).map(|(&s, &v)| (s, v));
    chart.draw_series(LineSeries::new(points, LR_COLOUR.stroke_width(2)))?;
    Ok(())
}

/// Draws the loss curve of a run's history (one [`Progress`] per step) into a PNG, atomically.
pub fn save_loss_curve(path: &Path, history: &[Progress]) -> Result<()> {
    register()?;
    let steps: Vec<f64> = history.iter().map(|p| p.step as f64).collect();
    let pick = |f: fn(&Progress) -> f32| history.iter().map(f).collect::<Vec<f32>>();
    let (l1, g_gan, d_real, d_fake) =
        (pick(|p| p.g_l1), pick(|p| p.g_gan), pick(|p| p.d_real), pick(|p| p.d_fake));
    let lr: Vec<f64> = history.iter().map(|p| p.lr).collect();
    let first = steps.first().copied().unwrap_or(0.0);
    let last = steps.last().copied().unwrap_or(1.0).max(first + 1.0);
    let x = first..last;
    let half = (history.len() / 50).max(2);

    let mut buf = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        let draw = || -> std::result::Result<(), DrawingAreaErrorKind<_>> {
            root.fill(&WHITE)?;
            let title = format!(
                "pix2pix training: {} steps (thin: each step; bold: mean over {} steps)",
                history.last().map(|p| p.step).unwrap_or(0),
                2 * half + 1
            );
            let body = root.titled(&title, (FAMILY, 20))?;
            let panels = body.split_by_breakpoints::<u32, u32, _, _>([], [270, 540]);
            let l1 = [Series { name: "G_L1 (λ·L1)", values: &l1, colour: L1_COLOUR }];
            loss_panel(&panels[0], "Generator reconstruction term", x.clone(), &steps, &l1, half)?;
            let gan = [
                Series { name: "G_GAN", values: &g_gan, colour: G_GAN_COLOUR },
                Series { name: "D_real", values: &d_real, colour: D_REAL_COLOUR },
                Series { name: "D_fake", values: &d_fake, colour: D_FAKE_COLOUR },
            ];
            loss_panel(&panels[1], "Adversarial terms", x.clone(), &steps, &gan, half)?;
            lr_panel(&panels[2], x.clone(), &steps, &lr)?;
            root.present()
        };
        draw().map_err(|e| plot_err(path, e))?;
    }
    let img = image::RgbImage::from_raw(WIDTH, HEIGHT, buf)
        .ok_or_else(|| plot_err(path, "buffer smaller than the image"))?;
    write_png(path, &img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_is_a_centred_mean_that_skips_gaps() {
        let s = smooth(&[1.0, 2.0, f32::NAN, 4.0, 5.0], 1);
        assert_eq!(s, vec![1.5, 1.5, 3.0, 4.5, 4.5]);
    }

    #[test]
    fn the_y_range_ignores_rare_spikes_but_keeps_the_trend() {
        let mut v = vec![1.0f32; 200];
        v[0] = 1000.0;
        let r = y_range(&[&v], &[vec![1.0; 200]], 0.1);
        assert!(r.start < 1.0 && r.end > 1.0 && r.end < 2.0, "{r:?}");
    }
}
