//! The tile size policy through the host binary: on a smooth gradient, the tiled output shows
//! no seams against the padded whole-image output.

mod host_common;

use host_common::*;

/// Mean |jump| of the row/column-averaged error profile (tiled − pad) across lines that are
/// multiples of 16 (tile origins and ends sit on multiples of 32 and overlap midpoints on
/// multiples of 16 when the sides are multiples of 32) and across all other lines. Averaging
/// along lines removes the fixtures' texture; a seam would be a jump on the first set.
fn seam_error(tiled: &image::RgbImage, pad: &image::RgbImage) -> (f64, f64) {
    let (w, h) = tiled.dimensions();
    let mut cols = vec![0f64; w as usize];
    let mut rows = vec![0f64; h as usize];
    for (x, y, p) in tiled.enumerate_pixels() {
        let q = pad.get_pixel(x, y);
        let d: f64 = (0..3).map(|c| p[c] as f64 - q[c] as f64).sum::<f64>() / 3.0;
        cols[x as usize] += d / h as f64;
        rows[y as usize] += d / w as f64;
    }
    let (mut sb, mut nb, mut si, mut ni) = (0f64, 0usize, 0f64, 0usize);
    for p in [&cols, &rows] {
        for k in 1..p.len() {
            let d = (p[k] - p[k - 1]).abs();
            if k % 16 == 0 {
                sb += d;
                nb += 1;
            } else {
                si += d;
                ni += 1;
            }
        }
    }
    (sb / nb as f64, si / ni as f64)
}

#[test]
fn tile_blending_has_no_seams() {
    let t = TempDir::new("tiling");
    // 416×192: several 128-px tiles each way, not a multiple of the stride (so tiles are used).
    save(&gradient(416, 192), &t.join("g.png"));
    let mut out = std::collections::HashMap::new();
    for policy in ["tile", "pad"] {
        let dest = t.join(&format!("{policy}.png"));
        let o = run(host(&["run", "--plugin"]).arg(plugin()).arg("--model").arg(fixture(UNET128)).arg("--input").arg(t.join("g.png")).arg("--output").arg(&dest).args(["--size-policy", policy, "--tile-overlap", "32"]));
        assert!(o.status.success());
        out.insert(policy, image::open(&dest).unwrap().to_rgb8());
    }
    let (tiled, pad) = (&out["tile"], &out["pad"]);
    assert_eq!(tiled.dimensions(), (416, 192));
    let (boundary, interior) = seam_error(tiled, pad);
    println!("seam error: boundaries {boundary:.3}, elsewhere {interior:.3}");
    assert!(boundary <= interior, "error jumps {boundary:.3} at tile boundaries vs {interior:.3} elsewhere");
}
