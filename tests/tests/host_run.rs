//! `host info` and `host run` end to end: the real binary loading the real plugin.

mod host_common;

use host_common::*;

#[test]
fn info_reports_the_plugin_and_abi_check() {
    let p = plugin();
    let out = run(host(&["info", "--plugin"]).arg(&p));
    assert!(out.status.success());
    let s = stdout(&out);
    assert!(s.contains("name      pix2pix"), "{s}");
    assert!(s.contains("abi check ok"), "{s}");
    assert!(s.contains("features  ") && s.contains("translate"), "{s}");
}

#[test]
fn missing_plugin_or_model_is_one_clear_line() {
    let out = run(&mut host(&["info", "--plugin", "/no/such/libpix2pix.so"]));
    assert!(!out.status.success());
    assert!(stdout(&out).contains("no such file"));

    let t = TempDir::new("missing");
    save(&rgb(64, 64, 0), &t.join("in.png"));
    let out = run(host(&["run", "--plugin", "/no/such/lib.so", "--input"])
        .arg(t.join("in.png"))
        .arg("--output")
        .arg(t.join("o.png")));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out).trim(), "error: plugin /no/such/lib.so: no such file");

    let out = run(host(&["run", "--plugin"])
        .arg(plugin())
        .args(["--model", "/no/model.safetensors", "--input"])
        .arg(t.join("in.png"))
        .arg("--output")
        .arg(t.join("o.png")));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("model /no/model.safetensors: no such file"), "{err}");
    assert!(!err.contains("backtrace"), "{err}");
}

#[test]
fn run_translates_a_mixed_folder_and_reports_the_corrupt_file() {
    let t = TempDir::new("run-mixed");
    let inputs = t.join("in");
    let good = mixed_inputs(&inputs);
    let out_dir = t.join("out");
    let out = run(host(&["run", "--plugin"])
        .arg(plugin())
        .arg("--model")
        .arg(fixture(UNET128))
        .arg("--input")
        .arg(&inputs)
        .arg("--output")
        .arg(&out_dir)
        .args(["--workers", "2"]));
    assert_eq!(out.status.code(), Some(1), "a failed input makes the exit status 1");
    let s = stdout(&out);
    assert!(s.contains(&format!("processed {}, skipped 0, failed 1", good.len())), "{s}");
    assert!(
        s.contains("failed: ") && s.contains("corrupt.png") && s.contains("cannot decode image"),
        "{s}"
    );
    for (name, size) in &good {
        assert_eq!(size_of(&out_dir.join(name)), *size, "{name} keeps its size");
    }
    // Alpha is carried through; gray comes out RGB.
    assert!(image::open(out_dir.join("d_rgba.png")).unwrap().color().has_alpha());
    assert_eq!(files(&out_dir).len(), good.len(), "{:?}", files(&out_dir));
    assert_all_complete(&out_dir);

    // Resume: nothing is redone.
    let again = run(host(&["run", "--plugin"])
        .arg(plugin())
        .arg("--model")
        .arg(fixture(UNET128))
        .arg("--input")
        .arg(&inputs)
        .arg("--output")
        .arg(&out_dir)
        .arg("--skip-existing"));
    assert!(
        stdout(&again).contains(&format!("processed 0, skipped {}, failed 1", good.len())),
        "{}",
        stdout(&again)
    );
}

#[test]
fn run_one_file_to_a_file_with_each_size_policy() {
    let t = TempDir::new("run-one");
    save(&rgb(250, 177, 5), &t.join("x.png"));
    for policy in ["resize", "pad", "tile"] {
        let dest = t.join(&format!("y_{policy}.jpg"));
        let out = run(host(&["run", "--plugin"])
            .arg(plugin())
            .arg("--model")
            .arg(fixture(UNET128))
            .arg("--input")
            .arg(t.join("x.png"))
            .arg("--output")
            .arg(&dest)
            .args(["--size-policy", policy, "--threads", "1"]));
        assert!(out.status.success(), "{policy}");
        assert_eq!(size_of(&dest), (250, 177), "{policy}");
    }
}

#[test]
fn run_help_documents_the_default_size_policy() {
    let out = run(&mut host(&["run", "--help"]));
    let s = stdout(&out);
    assert!(s.contains("[default: pad]"), "{s}");
    assert!(s.contains("reflect-padded") && s.contains("few megapixels"), "{s}");
}
