//! `host eval --segmenter`: the label-consistency score against the reference's
//! `label_score.py`, whose figures for a fixture model, a fixture segmenter and the four example
//! test pairs are in `tests/fixtures/label_score/expected.json` (made by `gen.py` beside it with
//! the real reference code).

mod host_common;

use std::path::PathBuf;

use host_common::*;

fn label_fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/label_score").join(name)
}

/// A number from `expected.json` (a flat key of the top-level object).
fn expected(key: &str) -> f64 {
    let path = label_fixture("expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let pat = format!("\"{key}\": ");
    let at = text.find(&pat).unwrap_or_else(|| panic!("{}: no {key}", path.display())) + pat.len();
    let end = text[at..].find([',', '\n']).map_or(text.len(), |e| at + e);
    text[at..end]
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}: {key} is not a number", path.display()))
}

fn eval_with(segmenter: &std::path::Path) -> std::process::Output {
    run(host(&["eval", "--plugin"])
        .arg(plugin())
        .arg("--model")
        .arg(root().join("tests/fixtures/unet256_ngf8_batch/generator.pth"))
        .arg("--data")
        .arg(root().join("examples/facades/test"))
        .args(["--direction", "BtoA", "--no-html", "--segmenter"])
        .arg(segmenter))
}

#[test]
fn label_score_agrees_with_the_reference_script() {
    let out = eval_with(&label_fixture("segmenter.pth"));
    assert!(out.status.success());
    let s = stdout(&out);
    let lines: Vec<&str> = s.lines().collect();
    assert!(lines.len() >= 2, "{s}");
    assert!(lines[lines.len() - 2].starts_with("mae "), "pixel metrics come just before: {s}");
    let last: Vec<&str> = lines[lines.len() - 1].split_whitespace().collect();
    assert_eq!(last.len(), 4, "{s}");
    assert_eq!((last[0], last[2]), ("label_score", "real_label_score"), "{s}");
    let (score, real): (f64, f64) = (last[1].parse().unwrap(), last[3].parse().unwrap());
    let (want_score, want_real) = (expected("label_score"), expected("real_label_score"));
    assert!((score - want_score).abs() < 0.2, "label_score {score}, reference {want_score}");
    assert!((real - want_real).abs() < 0.2, "real_label_score {real}, reference {want_real}");
    // The fixture is made so that the two differ by more than the tolerance: the test would see
    // the real photo scored in place of the generated one.
    assert!((want_score - want_real).abs() > 1.0);
}

#[test]
fn segmenter_that_cannot_read_128_or_is_missing_is_refused_by_name() {
    // unet_256 needs sides that are multiples of 256.
    let seg = root().join("tests/fixtures/unet256_ngf8_batch/generator.pth");
    let out = eval_with(&seg);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("segmenter") && e.contains("unet256_ngf8_batch") && e.contains("128"),
        "{e}"
    );

    let t = TempDir::new("label-score-missing");
    let out = eval_with(&t.join("nope.pth"));
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("--segmenter") && e.contains("nope.pth"), "{e}");
    assert!(stdout(&out).is_empty(), "no metrics for a failed run: {}", stdout(&out));
}
