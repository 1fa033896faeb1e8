//! The tile size policy through the host binary: on a smooth gradient, the tiled output shows
//! no seams against the padded whole-image output.

mod host_common;

use host_common::*;

#[test]
fn tile_blending_has_no_seams() {
    let t = TempDir::new("tiling");
    // 416×192: several 128-px tiles each way, not a multiple of the stride (so tiles are used).
    save(&gradient(416, 192), &t.join("g.png"));
    let mut out = std::collections::HashMap::new();
    for policy in ["tile", "pad"] {
        let dest = t.join(&format!("{policy}.png"));
        let o = run(host(&["run", "--plugin"])
            .arg(plugin())
            .arg("--model")
            .arg(fixture(UNET128))
            .arg("--input")
            .arg(t.join("g.png"))
            .arg("--output")
            .arg(&dest)
            .args(["--size-policy", policy, "--tile-overlap", "32"]));
        assert!(o.status.success());
        out.insert(policy, image::open(&dest).unwrap().to_rgb8());
    }
    let (tiled, pad) = (&out["tile"], &out["pad"]);
    assert_eq!(tiled.dimensions(), (416, 192));
    let (boundary, interior) = seams::seam_error(tiled.as_raw(), pad.as_raw(), 416, 192);
    println!("seam error: boundaries {boundary:.3}, elsewhere {interior:.3}");
    assert!(
        boundary <= interior,
        "error jumps {boundary:.3} at tile boundaries vs {interior:.3} elsewhere"
    );
}
