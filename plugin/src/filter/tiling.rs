//! Tiled translation: overlapping native-size tiles blended with a feathered window.
//!
//! Layout. Tiles are `native_size` squares (a multiple of the network stride, the size the
//! network was trained at). Along each axis they are spread evenly so that the first starts at
//! 0, the last ends at the border and neighbours overlap by at least `tile_overlap` pixels
//! (clamped to half a tile). Origins sit on multiples of 32 pixels (less for small strides):
//! the transposed convolutions leave a texture with periods 2, 4, … and tiles placed off that
//! grid blend out of phase (aligning cut the MAD to the whole-image output below from 5.7 to
//! 2.2). Images are reflect-padded to at least one tile and to a multiple of that grid.
//!
//! Blending. Each tile's output is weighted by a separable window that ramps linearly from
//! ~0 to 1 across the whole overlap with each neighbour (and stays at 1 on image borders), and
//! the weighted sum is divided by the summed weights. Across an overlap the two ramps sum to
//! one, so the result fades from one tile to the next with no step, and the pixels nearest a
//! tile's own edge (the least reliable: they saw zero padding) weigh least.
//!
//! Statistics. With batch norm and batch statistics (the paper's test-time protocol), a tile
//! translated alone is normalised by its own statistics, so neighbouring tiles disagree in
//! tone. Here all tiles go through the network stacked into one batch: `BatchNorm2d` takes its
//! statistics over (N, H, W), so every tile is normalised with the same statistics, gathered
//! over the whole image (overlaps counted twice). When the tiles exceed
//! [`SHARED_STATS_PIXELS`] they are split into batches that each take every k-th tile, so each
//! batch still samples the whole image evenly. Instance norm is per sample by definition, so
//! no batching can share its statistics: such tiles keep their own and only the feathering
//! hides the tone steps. With running statistics or no norm, tiles are independent anyway.
//!
//! Measured (`cargo test --release -p pix2pix --lib tiling -- --nocapture`): a smooth two-axis
//! gradient, overlap 32, 0–255 scale, against the pad policy. The fixtures are barely trained,
//! so their outputs are mostly texture: "tone" is the mean absolute difference of 16×16 block
//! means; the seam error is the jump of the row/column-averaged error profile across tile
//! edges and overlap midpoints (boundary) against its jump between other neighbouring lines
//! (interior).
//!
//! | model, image | shared stats MAD / tone | own stats MAD / tone | seam error boundary / interior |
//! |---|---|---|---|
//! | `unet_256` batch, 768×512 (pad = the exact whole image) | 2.15 / 0.20 | 3.71 / 0.44 | 0.27 / 0.40 (own: 0.48 / 0.61) |
//! | `unet_256` batch, 608×288 (pad normalises over its reflected margin) | 3.74 / 0.30 | 3.53 / 0.25 | 0.46 / 0.68 |
//! | `unet_128` instance, 416×192 (per sample: no sharing) | — | 6.22 / 0.72 | 1.10 / 1.62 |
//!
//! Shared statistics halve the tone error where the reference really is the whole image; where
//! pad itself normalises over a reflected margin the two are within noise. Boundaries jump less
//! than the interior (the ramps smooth there); hard cuts at the overlap midpoints instead jump
//! 0.66 against 0.63 (768×512) and 1.60 against 1.68 (instance): these fixtures barely show
//! seams even then, so the numbers bound seams rather than showcase the feathering.
//!
//! Memory. Without shared batch statistics, tiles are translated a few at a time (at most
//! [`CHUNK_PIXELS`] per forward pass) row by row, and only one tile-high band of the blend is
//! kept: memory is bounded by the tile size, not the image. With shared batch statistics the
//! activations of up to [`SHARED_STATS_PIXELS`] are live at once (that is what sharing costs)
//! and the blend covers the whole image.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::filter::image_tensor::{unit, ImageF32};
use crate::filter::model::Options;
use crate::filter::pixels::{crop, reflect_pad};
use crate::nets::forward::NormStats;
use crate::nets::generator::GeneratorConfig;
use crate::nets::norm::NormKind;

/// Tile pixels per forward pass when tiles are independent (8 tiles of 256²).
pub(crate) const CHUNK_PIXELS: usize = 1 << 19;
/// Tile pixels per forward pass when tiles share batch statistics (64 tiles of 256²).
pub(crate) const SHARED_STATS_PIXELS: usize = 1 << 22;

/// The network on a (N, C, T, T) batch of tiles in [-1, 1].
pub(crate) type TensorForward<'a> = dyn Fn(&Tensor) -> Result<Tensor> + 'a;

/// How an image is cut into tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TileGeometry {
    /// Tile side: the network's native size (a multiple of its stride).
    pub tile: usize,
    /// The network stride.
    pub stride: usize,
    /// Overlap between neighbouring tiles in pixels (clamped to half a tile).
    pub overlap: usize,
    /// Translate all tiles in one batch (shared batch-norm statistics); otherwise tile rows are
    /// streamed through a band buffer.
    pub shared_stats: bool,
}

/// The tile policy's geometry for a network and the options it was opened with.
pub(crate) fn geometry(config: &GeneratorConfig, options: &Options) -> TileGeometry {
    TileGeometry {
        tile: config.native_size(),
        stride: config.stride(),
        overlap: options.tile_overlap,
        // All tiles in one batch share batch-norm statistics; any other norm is per tile.
        shared_stats: config.norm() == NormKind::Batch && options.norm_stats == NormStats::Batch,
    }
}

/// Translates an image of any size with `net` run on tiles laid out by `geometry`.
pub(crate) fn translate_tiled(
    net: &TensorForward,
    geometry: &TileGeometry,
    img: &ImageF32,
) -> Result<ImageF32> {
    let (w, h) = (img.width, img.height);
    if img.data.len() < w * h * img.channels {
        return Err(Error::invalid("image", "buffer smaller than its size"));
    }
    let (t, overlap, shared) = (geometry.tile, geometry.overlap, geometry.shared_stats);
    let align = alignment(t, geometry.stride);
    // Reflect-pad up to at least one tile and to a multiple of the alignment, so that every
    // tile origin can sit on the alignment grid.
    let (pw, ph) = (w.max(t).next_multiple_of(align), h.max(t).next_multiple_of(align));
    let (left, top) = ((pw - w) / 2, (ph - h) / 2);
    let padded;
    let src: &ImageF32 = if (pw, ph) != (w, h) {
        padded = reflect_pad(img, left, top, pw, ph);
        &padded
    } else {
        img
    };
    let grid = Grid::new(pw, ph, t, overlap.min(t / 2), align);
    let out =
        if shared { blend_shared(net, src, &grid)? } else { blend_streamed(net, src, &grid)? };
    Ok(if (pw, ph) != (w, h) { crop(&out, left, top, w, h) } else { out })
}

/// Tile origins and blending windows over a `width`×`height` image.
pub(crate) struct Grid {
    pub width: usize,
    pub height: usize,
    pub tile: usize,
    pub xs: Vec<usize>,
    pub ys: Vec<usize>,
    wx: Vec<Vec<f32>>,
    wy: Vec<Vec<f32>>,
}

impl Grid {
    pub(crate) fn new(
        width: usize,
        height: usize,
        tile: usize,
        overlap: usize,
        align: usize,
    ) -> Self {
        let xs = positions(width, tile, overlap, align);
        let ys = positions(height, tile, overlap, align);
        let wx = windows(&xs, tile);
        let wy = windows(&ys, tile);
        Self { width, height, tile, xs, ys, wx, wy }
    }
}

/// Tile origins sit on multiples of this, so that the texture of the upsampling layers
/// (period 2, 4, … 2^k) has the same phase in every tile and neighbours blend in step.
pub(crate) fn alignment(tile: usize, stride: usize) -> usize {
    stride.min(32).min(tile / 4).max(1)
}

/// Evenly spread origins on multiples of `align`: first at 0, last at `len - tile`,
/// neighbours overlapping by ≥ `overlap`. `len` and `tile` are multiples of `align`.
fn positions(len: usize, tile: usize, overlap: usize, align: usize) -> Vec<usize> {
    if len <= tile {
        return vec![0];
    }
    let span = (len - tile) / align;
    let step = ((tile - overlap) / align).max(1);
    let n = span.div_ceil(step) + 1;
    (0..n).map(|i| (i * span + (n - 1) / 2) / (n - 1) * align).collect()
}

/// Per-tile 1-D weights: a linear ramp across the overlap with each neighbour, 1 elsewhere.
fn windows(pos: &[usize], tile: usize) -> Vec<Vec<f32>> {
    (0..pos.len())
        .map(|i| {
            let before = if i > 0 { pos[i - 1] + tile - pos[i] } else { 0 };
            let after = if i + 1 < pos.len() { pos[i] + tile - pos[i + 1] } else { 0 };
            (0..tile)
                .map(|x| {
                    let mut v = 1f32;
                    if before > 0 {
                        v = v.min((x + 1) as f32 / (before + 1) as f32);
                    }
                    if after > 0 {
                        v = v.min((tile - x) as f32 / (after + 1) as f32);
                    }
                    v
                })
                .collect()
        })
        .collect()
}

/// A running weighted sum over rows `base..base + rows` of the output; its channels are the
/// network's output channels, known from the first tile.
struct Blend {
    width: usize,
    rows: usize,
    base: usize,
    channels: usize,
    sum: Vec<f32>,
    weight: Vec<f32>,
}

impl Blend {
    fn new(width: usize, rows: usize) -> Self {
        Self { width, rows, base: 0, channels: 0, sum: Vec::new(), weight: vec![0.0; width * rows] }
    }

    /// Adds one tile output (C×T×T, values in [-1, 1]) at (`x0`, `y0`).
    fn add(&mut self, out: &[f32], channels: usize, x0: usize, y0: usize, wx: &[f32], wy: &[f32]) {
        if self.channels == 0 {
            self.channels = channels;
            self.sum = vec![0.0; self.width * self.rows * channels];
        }
        let t = wx.len();
        let plane = t * t;
        for (ty, &wy) in wy.iter().enumerate() {
            let row = (y0 + ty - self.base) * self.width + x0;
            for (tx, &wx) in wx.iter().enumerate() {
                let wgt = wx * wy;
                let o = row + tx;
                self.weight[o] += wgt;
                for c in 0..self.channels {
                    self.sum[o * self.channels + c] +=
                        wgt * out[c.min(channels - 1) * plane + ty * t + tx];
                }
            }
        }
    }

    /// Finishes rows `base..to` into `dst` (in [0, 1], as `tensor_to_image` maps) and slides
    /// the window down to start at `to`.
    fn flush(&mut self, to: usize, dst: &mut Vec<f32>) {
        let n = to - self.base;
        let c = self.channels;
        for i in 0..n * self.width {
            let wgt = self.weight[i].max(f32::MIN_POSITIVE);
            for ch in 0..c {
                dst.push(unit(self.sum[i * c + ch] / wgt));
            }
        }
        let keep = self.rows - n;
        self.sum.copy_within(n * self.width * c.., 0);
        self.weight.copy_within(n * self.width.., 0);
        self.sum[keep * self.width * c..].fill(0.0);
        self.weight[keep * self.width..].fill(0.0);
        self.base = to;
    }
}

/// Translates the tiles at `origins` in one forward pass; returns each tile's C×T×T output.
fn run_tiles(
    net: &TensorForward,
    src: &ImageF32,
    t: usize,
    origins: &[(usize, usize)],
) -> Result<(Vec<Vec<f32>>, usize)> {
    let plane = t * t;
    let (width, ci) = (src.width, src.channels);
    let mut v = vec![0f32; origins.len() * ci * plane];
    for (k, &(x0, y0)) in origins.iter().enumerate() {
        let base = k * ci * plane;
        for y in 0..t {
            let row = &src.data[((y0 + y) * width + x0) * ci..((y0 + y) * width + x0 + t) * ci];
            for (x, px) in row.chunks_exact(ci).enumerate() {
                for c in 0..ci {
                    v[base + c * plane + y * t + x] = px[c] * 2.0 - 1.0;
                }
            }
        }
    }
    let x = Tensor::from_vec(v, (origins.len(), ci, t, t), &Device::Cpu)?;
    let y = net(&x)?;
    let (n, c, _, _) = y.dims4()?;
    let flat: Vec<f32> = y.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let per = c * plane;
    Ok(((0..n).map(|k| flat[k * per..(k + 1) * per].to_vec()).collect(), c))
}

/// All tiles through the network in batches that each sample the whole image (every k-th
/// tile), so batch norm normalises every tile with (nearly) whole-image statistics.
fn blend_shared(net: &TensorForward, src: &ImageF32, g: &Grid) -> Result<ImageF32> {
    let t = g.tile;
    let tiles: Vec<(usize, usize)> =
        (0..g.ys.len()).flat_map(|j| (0..g.xs.len()).map(move |i| (i, j))).collect();
    let per_batch = (SHARED_STATS_PIXELS / (t * t)).max(1);
    let batches = tiles.len().div_ceil(per_batch);
    let mut blend = Blend::new(g.width, g.height);
    for b in 0..batches {
        let members: Vec<(usize, usize)> = tiles.iter().copied().skip(b).step_by(batches).collect();
        let origins: Vec<(usize, usize)> =
            members.iter().map(|&(i, j)| (g.xs[i], g.ys[j])).collect();
        let (outs, c) = run_tiles(net, src, t, &origins)?;
        for (&(i, j), out) in members.iter().zip(&outs) {
            blend.add(out, c, g.xs[i], g.ys[j], &g.wx[i], &g.wy[j]);
        }
    }
    let mut dst = Vec::with_capacity(g.width * g.height * blend.channels);
    blend.flush(g.height, &mut dst);
    Ok(ImageF32 { width: g.width, height: g.height, channels: blend.channels, data: dst })
}

/// Tile rows one at a time through a one-tile-high band: memory bounded by the tile size.
fn blend_streamed(net: &TensorForward, src: &ImageF32, g: &Grid) -> Result<ImageF32> {
    let t = g.tile;
    let per_batch = (CHUNK_PIXELS / (t * t)).max(1);
    let mut blend = Blend::new(g.width, t);
    let mut dst = Vec::new();
    for (j, &y0) in g.ys.iter().enumerate() {
        // Rows above this tile row are final; the band then covers exactly this row of tiles.
        blend.flush(y0, &mut dst);
        let cols: Vec<usize> = (0..g.xs.len()).collect();
        for chunk in cols.chunks(per_batch) {
            let origins: Vec<(usize, usize)> = chunk.iter().map(|&i| (g.xs[i], y0)).collect();
            let (outs, c) = run_tiles(net, src, t, &origins)?;
            for (&i, out) in chunk.iter().zip(&outs) {
                blend.add(out, c, g.xs[i], y0, &g.wx[i], &g.wy[j]);
            }
        }
    }
    blend.flush(g.height, &mut dst);
    Ok(ImageF32 { width: g.width, height: g.height, channels: blend.channels, data: dst })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::filter::image_tensor::{image_to_tensor, tensor_to_image};
    use crate::filter::size_policy::padded;
    use crate::nets::arch::infer_generator;
    use crate::nets::forward::{Forward, Layer, NormStats};
    use crate::nets::generator::Generator;
    use crate::nets::norm::NormKind;

    #[test]
    fn positions_cover_with_overlap() {
        for (len, tile, overlap, align) in [
            (320, 128, 32, 32),
            (128, 128, 32, 32),
            (160, 128, 32, 32),
            (1000, 256, 0, 4),
            (608, 256, 128, 32),
            (96, 64, 32, 16),
        ] {
            let p = positions(len, tile, overlap, align);
            assert!(p.iter().all(|x| x % align == 0), "{p:?}");
            assert_eq!(p[0], 0);
            assert_eq!(p.last().copied().unwrap_or(0) + tile, len.max(tile));
            for w in p.windows(2) {
                assert!(w[0] + tile >= w[1] + overlap, "{len} {tile} {overlap}: {p:?}");
            }
        }
    }

    #[test]
    fn window_weights_sum_to_one_in_overlaps() {
        let p = positions(608, 256, 32, 32);
        let w = windows(&p, 256);
        for x in 0..608 {
            let s: f32 = p
                .iter()
                .zip(&w)
                .filter(|(&o, _)| x >= o && x < o + 256)
                .map(|(&o, w)| w[x - o])
                .sum();
            assert!((s - 1.0).abs() < 1e-5, "x {x}: {s}");
        }
    }

    /// Smooth two-axis gradient, the worst case for visible seams.
    fn gradient(w: usize, h: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                v.extend_from_slice(&[(x * 255 / (w - 1)) as u8, (y * 255 / (h - 1)) as u8, 128]);
            }
        }
        v
    }

    fn mad(a: &[u8], b: &[u8]) -> f64 {
        a.iter().zip(b).map(|(&a, &b)| (a as f64 - b as f64).abs()).sum::<f64>() / a.len() as f64
    }

    /// Tone: mean absolute difference of 16×16 block means (low frequencies only).
    fn tone(a: &[u8], b: &[u8], w: usize, h: usize) -> f64 {
        let (mut sum, mut n) = (0f64, 0usize);
        for by in 0..h / 16 {
            for bx in 0..w / 16 {
                for c in 0..3 {
                    let mut d = 0f64;
                    for y in by * 16..by * 16 + 16 {
                        for x in bx * 16..bx * 16 + 16 {
                            d += a[(y * w + x) * 3 + c] as f64 - b[(y * w + x) * 3 + c] as f64;
                        }
                    }
                    sum += (d / 256.0).abs();
                    n += 1;
                }
            }
        }
        sum / n as f64
    }

    /// Tile edges and overlap midpoints inside the image (image borders are not seams).
    fn seam_lines(pos: &[usize], tile: usize) -> Vec<usize> {
        pos.windows(2).flat_map(|p| [p[1], p[0] + tile, (p[0] + tile + p[1]) / 2]).collect()
    }

    /// Seam error: the error a − b averaged along each line's direction (column means for
    /// vertical lines, row means for horizontal ones: the fixtures' texture averages away),
    /// then the mean |jump| of that profile across `xl`/`yl` and across all other lines.
    fn profile_jumps(
        a: &[u8],
        b: &[u8],
        w: usize,
        h: usize,
        xl: &[usize],
        yl: &[usize],
    ) -> (f64, f64) {
        let mut cols = vec![0f64; w];
        let mut rows = vec![0f64; h];
        for y in 0..h {
            for x in 0..w {
                let d: f64 = (0..3)
                    .map(|c| a[(y * w + x) * 3 + c] as f64 - b[(y * w + x) * 3 + c] as f64)
                    .sum::<f64>()
                    / 3.0;
                cols[x] += d / h as f64;
                rows[y] += d / w as f64;
            }
        }
        let (mut sb, mut nb, mut si, mut ni) = (0f64, 0usize, 0f64, 0usize);
        for (p, e) in [(&cols, xl), (&rows, yl)] {
            for k in 1..p.len() {
                let d = (p[k] - p[k - 1]).abs();
                if e.contains(&k) {
                    sb += d;
                    nb += 1
                } else {
                    si += d;
                    ni += 1
                }
            }
        }
        (sb / nb.max(1) as f64, si / ni.max(1) as f64)
    }

    /// A fixture generator, run as a model opened with the default options runs it.
    fn fixture_generator(name: &str) -> Generator {
        let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name)
            .join("generator.safetensors");
        let ckpt = Checkpoint::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let config = infer_generator(&ckpt).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        ckpt.build(|vb| Generator::new(config, vb))
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// The numbers quoted in the module documentation. Sides are multiples of the alignment so
    /// that the grid below is the one `translate_tiled` uses.
    #[test]
    fn tone_and_seams_against_pad() {
        // 768×512 is a multiple of the stride, so there "pad" is exactly the whole image at once.
        for (name, w, h) in [
            ("unet256_ngf8_batch", 608, 288),
            ("unet256_ngf8_batch", 768, 512),
            ("unet128_ngf8_instance_lsgan", 416, 192),
        ] {
            let generator = fixture_generator(name);
            let config = generator.config();
            let net = |x: &Tensor| -> Result<Tensor> {
                Ok(generator.forward(x, &Forward::infer(NormStats::Batch))?)
            };
            let rgb = gradient(w, h);
            let img = ImageF32 {
                width: w,
                height: h,
                channels: 3,
                data: rgb.iter().map(|&v| v as f32 / 255.0).collect(),
            };
            // The filter's 8-bit output quantisation.
            let q = |i: ImageF32| -> Vec<u8> {
                i.data.iter().map(|&v| (v * 255.0).round() as u8).collect()
            };
            let net_img = |i: &[ImageF32]| -> Result<Vec<ImageF32>> {
                Ok(vec![tensor_to_image(&net(&image_to_tensor(&i[0])?)?)?])
            };
            let pad =
                q(padded(&net_img, config.stride(), std::slice::from_ref(&img)).unwrap().remove(0));
            let t = config.native_size();
            let align = alignment(t, config.stride());
            let geometry = |shared_stats| TileGeometry {
                tile: t,
                stride: config.stride(),
                overlap: 32,
                shared_stats,
            };
            let g = Grid::new(w, h, t, 32, align);
            let shared = q(translate_tiled(&net, &geometry(true), &img).unwrap());
            let own = q(translate_tiled(&net, &geometry(false), &img).unwrap());
            // Hard cuts at the overlap midpoints, each tile on its own statistics.
            let mut cut = Grid::new(w, h, t, 32, align);
            let hard = |pos: &[usize]| -> Vec<Vec<f32>> {
                (0..pos.len())
                    .map(|i| {
                        let lo = if i > 0 { (pos[i - 1] + t + pos[i]) / 2 } else { 0 };
                        let hi = if i + 1 < pos.len() {
                            (pos[i] + t + pos[i + 1]) / 2
                        } else {
                            usize::MAX
                        };
                        (0..t)
                            .map(|x| if pos[i] + x >= lo && pos[i] + x < hi { 1.0 } else { 0.0 })
                            .collect()
                    })
                    .collect()
            };
            cut.wx = hard(&cut.xs);
            cut.wy = hard(&cut.ys);
            let hard_own = q(blend_streamed(&net, &img, &cut).unwrap());
            let (xl, yl) = (seam_lines(&g.xs, t), seam_lines(&g.ys, t));
            let mids = |p: &[usize]| -> Vec<usize> {
                p.windows(2).map(|p| (p[0] + t + p[1]) / 2).collect()
            };
            let (sb, si) = profile_jumps(&shared, &pad, w, h, &xl, &yl);
            let (ob, oi) = profile_jumps(&own, &pad, w, h, &xl, &yl);
            let (hb, hi) = profile_jumps(&hard_own, &pad, w, h, &mids(&g.xs), &mids(&g.ys));
            // The measurements travel in the failure message: a test prints nothing.
            let report = format!(
                "{name} {w}x{h}: MAD/tone to pad: shared {:.2}/{:.2}, own {:.2}/{:.2}, hard cuts {:.2}/{:.2}; \
                 seam error boundary/interior: shared {sb:.3}/{si:.3}, own {ob:.3}/{oi:.3}, hard cuts (at the cuts) {hb:.3}/{hi:.3}",
                mad(&shared, &pad),
                tone(&shared, &pad, w, h),
                mad(&own, &pad),
                tone(&own, &pad, w, h),
                mad(&hard_own, &pad),
                tone(&hard_own, &pad, w, h),
            );
            let chosen = if config.norm() == NormKind::Batch { (sb, si) } else { (ob, oi) };
            assert!(
                chosen.0 <= chosen.1,
                "{name}: seams: error jumps {} at tile boundaries vs {} inside ({report})",
                chosen.0,
                chosen.1
            );
            if (name, w) == ("unet256_ngf8_batch", 768) {
                assert!(
                    tone(&shared, &pad, w, h) < tone(&own, &pad, w, h),
                    "shared statistics should match the whole image better"
                );
            }
        }
    }
}
