//! `host pipeline` end to end: the documented example (tests/pipelines/facades.toml, run as
//! is), resuming, sharding, interrupting, and configuration errors.

mod host_common;

use std::path::Path;
use std::process::Command;

use host_common::*;

/// Lays out what facades.toml expects: aligned A|B images in labels/ (and a subfolder) and
/// more/, mixed sizes and kinds, a corrupt one and a non-image, the model.
fn example_folder(t: &TempDir) -> usize {
    std::fs::copy(root().join("tests/pipelines/facades.toml"), t.join("facades.toml")).unwrap();
    std::fs::create_dir_all(t.join("models")).unwrap();
    std::fs::copy(fixture(UNET128), t.join("models/facades.safetensors")).unwrap();
    save(&rgb(256, 128, 1), &t.join("labels/p1.png"));
    save(&rgb(250, 126, 2), &t.join("labels/sub/p2.png"));
    save(&gray(180, 90), &t.join("labels/p3.png"));
    save(&rgba(120, 100), &t.join("more/p4.png"));
    save(&rgb(90, 40, 4), &t.join("more/p5.png"));
    save(&rgb(90, 40, 4), &t.join("more/skipped_by_glob.jpg"));
    std::fs::write(t.join("labels/broken.png"), b"\x89PNG\r\n\x1a\ntruncated").unwrap();
    std::fs::write(t.join("labels/readme.txt"), b"labels").unwrap();
    5
}

fn pipeline(config: &Path) -> Command {
    let mut c = host(&["pipeline"]);
    c.arg(config).arg("--plugin").arg(plugin());
    c
}

#[test]
fn the_documented_example_runs_and_resumes() {
    let t = TempDir::new("pipe-example");
    let n = example_folder(&t);
    // Run from elsewhere: relative paths resolve against the TOML's folder.
    let out = run(pipeline(&t.join("facades.toml")).current_dir(std::env::temp_dir()));
    assert_eq!(out.status.code(), Some(1), "one input fails");
    let s = stdout(&out);
    assert!(s.contains(&format!("processed {n}, skipped 0, failed 1")), "{s}");
    assert!(s.contains("broken.png") && s.contains("cannot decode image"), "{s}");
    let out_dir = t.join("out");
    let names = files(&out_dir);
    assert_eq!(
        names,
        ["p1_facades.png", "p2_facades.png", "p3_facades.png", "p4_facades.png", "p5_facades.png"]
    );
    for f in &names {
        assert_eq!(size_of(&out_dir.join(f)), (512, 512), "{f}");
    }
    assert_all_complete(&out_dir);

    // overwrite = false: a rerun skips and counts them.
    let again = run(&mut pipeline(&t.join("facades.toml")));
    assert!(
        stdout(&again).contains(&format!("processed 0, skipped {n}, failed 1")),
        "{}",
        stdout(&again)
    );
}

#[test]
fn shards_split_the_inputs_deterministically() {
    let t = TempDir::new("pipe-shard");
    let n = example_folder(&t);
    std::fs::remove_file(t.join("labels/broken.png")).unwrap();
    let mut per_shard = Vec::new();
    for k in 0..2 {
        let out = run(pipeline(&t.join("facades.toml")).args(["--shard", &format!("{k}/2")]));
        assert!(out.status.success());
        per_shard.push(files(&t.join("out")).len());
    }
    // Shard 0 takes sorted indices 0, 2, 4; shard 1 then adds 1, 3.
    assert_eq!(per_shard, [3, n]);

    // auto: a Slurm array task, then a Kubernetes Indexed Job.
    std::fs::remove_dir_all(t.join("out")).unwrap();
    let out = run(pipeline(&t.join("facades.toml"))
        .args(["--shard", "auto"])
        .env_remove("JOB_COMPLETION_INDEX")
        .env_remove("SLURM_ARRAY_TASK_MIN")
        .env("SLURM_ARRAY_TASK_ID", "1")
        .env("SLURM_ARRAY_TASK_COUNT", "2"));
    assert!(out.status.success());
    assert_eq!(files(&t.join("out")).len(), 2);
    let out = run(pipeline(&t.join("facades.toml"))
        .args(["--shard", "auto"])
        .env("JOB_COMPLETION_INDEX", "0")
        .env("PIX2PIX_SHARD_COUNT", "2"));
    assert!(out.status.success());
    assert_eq!(files(&t.join("out")).len(), n);
    let out = run(pipeline(&t.join("facades.toml"))
        .args(["--shard", "auto"])
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX"));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("JOB_COMPLETION_INDEX"), "{}", stderr(&out));
}

#[test]
fn an_interrupted_run_leaves_no_partial_image_and_resumes() {
    let t = TempDir::new("pipe-interrupt");
    for i in 0..40 {
        save(&rgb(160, 120, i), &t.join(&format!("in/{i:02}.png")));
    }
    std::fs::write(
        t.join("p.toml"),
        format!(
            "workers = 1\n[input]\npaths = [\"in\"]\n[output]\ndir = \"out\"\n[[model]]\nname = \"m\"\npath = {:?}\n[[step]]\nop = \"translate\"\n[[step]]\nop = \"resize\"\nwidth = 512\nheight = 384\n",
            fixture(UNET128).display().to_string()
        ),
    )
    .unwrap();
    let mut child = pipeline(&t.join("p.toml"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once some outputs exist.
    let start = std::time::Instant::now();
    while files(&t.join("out")).iter().filter(|f| f.ends_with(".png")).count() < 3
        && start.elapsed().as_secs() < 60
        && matches!(child.try_wait(), Ok(None))
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let first = child.wait_with_output().unwrap();
    let s = stdout(&first);
    eprintln!("{s}{}", stderr(&first));
    let done = files(&t.join("out")).len();
    assert_all_complete(&t.join("out"));
    if done < 40 {
        assert_eq!(first.status.code(), Some(130), "{s}");
        assert!(s.contains("interrupted"), "{s}");
    }
    let second = run(&mut pipeline(&t.join("p.toml")));
    assert!(second.status.success());
    assert!(
        stdout(&second).contains(&format!("processed {}, skipped {done}, failed 0", 40 - done)),
        "{}",
        stdout(&second)
    );
    assert_eq!(files(&t.join("out")).len(), 40);
    assert_all_complete(&t.join("out"));
}

#[test]
fn chained_models_and_review_sheets() {
    let t = TempDir::new("pipe-review");
    let text = std::fs::read_to_string(root().join("tests/pipelines/review_sheet.toml")).unwrap();
    // The example's model paths are relative to tests/pipelines/; here they are absolute.
    let text =
        text.replace("../fixtures/", &format!("{}/", root().join("tests/fixtures").display()));
    std::fs::write(t.join("review.toml"), text).unwrap();
    save(&rgb(200, 150, 1), &t.join("labels/a.png"));
    save(&gray(64, 100), &t.join("labels/b.png"));
    let out = run(&mut pipeline(&t.join("review.toml")));
    assert!(out.status.success());
    assert_eq!(files(&t.join("review")), ["0_a_unet+resnet.jpg", "1_b_unet+resnet.jpg"]);
    assert_eq!(size_of(&t.join("review/0_a_unet+resnet.jpg")), (400, 150));
    assert_eq!(size_of(&t.join("review/1_b_unet+resnet.jpg")), (128, 100));
}

#[test]
fn on_error_stop_starts_nothing_after_a_failure() {
    let t = TempDir::new("pipe-stop");
    std::fs::create_dir_all(t.join("in")).unwrap();
    std::fs::write(t.join("in/0_bad.png"), b"").unwrap();
    for i in 1..5 {
        save(&rgb(40, 40, i), &t.join(&format!("in/{i}.png")));
    }
    std::fs::write(t.join("p.toml"), "on_error = \"stop\"\n[input]\npaths = [\"in\"]\n[output]\ndir = \"out\"\n[[step]]\nop = \"flip\"\n").unwrap();
    let out = run(&mut pipeline(&t.join("p.toml")));
    assert_eq!(out.status.code(), Some(1));
    let s = stdout(&out);
    assert!(s.contains("processed 0, skipped 0, failed 1") && s.contains("not started 4"), "{s}");
}

#[test]
fn bad_toml_errors_name_the_line_and_key() {
    let t = TempDir::new("pipe-bad");
    let cases: &[(&str, &str)] = &[
        ("[input]\npaths = [\"in\"]\n[output]\ndir = \"out\"\n[[step]]\nop = \"resize\"\nwidth = \"wide\"\n", "p.toml:7:9: [[step]] #1, key `width`: invalid type: string \"wide\", expected u32"),
        ("[input]\npaths = [\"in\"]\nrecursiv = true\n[output]\ndir = \"out\"\n", "p.toml:3:1: [input], key `recursiv`: unknown field `recursiv`, expected `paths` or `recursive`"),
        ("[input]\npaths = [\"in\"]\n[output]\ndir = \"out\"\n[[step]]\nop = \"flip\"\n[[step]]\nop = \"blur\"\n", "p.toml:8:6: [[step]] #2, key `op`: unknown op \"blur\"; valid ops: split, crop, resize, flip, translate, concat"),
        ("[input]\npaths = [\"in\"]\n[output]\ndir = \"out\"\n[[step]]\nop = \"flip\"\nhalf = \"left\"\n", "p.toml:7:8: [[step]] #1, key `half`: key `half` does not apply to op \"flip\"; its keys: direction"),
        ("[input]\npaths = [\"in\"]\n[output]\ndir = \"out\"\nname = \"{stem}.gif\"\n", "p.toml:5:8: [output], key `name`: cannot tell the output format"),
        ("workers = 0\n[input]\npaths = [\"in\"]\n[output]\ndir = \"out\"\n", "p.toml:1:11: key `workers`: must be at least 1"),
        ("on_error = \"retry\"\n[input]\npaths = [\"in\"]\n[output]\ndir = \"out\"\n", "p.toml:1:12: key `on_error`: unknown variant `retry`, expected `continue` or `stop`"),
    ];
    for (text, want) in cases {
        std::fs::write(t.join("p.toml"), text).unwrap();
        let out = run(host(&["pipeline", "p.toml"]).current_dir(t.path()));
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "want {want:?}\ngot {err:?}");
    }
    // A missing model file is one clear line too.
    std::fs::create_dir_all(t.join("in")).unwrap();
    save(&rgb(32, 32, 0), &t.join("in/a.png"));
    std::fs::write(t.join("p.toml"), "[input]\npaths = [\"in\"]\n[output]\ndir = \"out\"\n[[model]]\nname = \"m\"\npath = \"nope.safetensors\"\n[[step]]\nop = \"translate\"\n").unwrap();
    let out = run(&mut pipeline(&t.join("p.toml")));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("nope.safetensors: no such file"), "{err}");
}

#[test]
fn help_documents_the_format_and_path_rule() {
    let out = run(&mut host(&["pipeline", "--help"]));
    let s = stdout(&out);
    assert!(s.contains("[[step]]") && s.contains("op = \"translate\""), "{s}");
    assert!(s.contains("resolve against the file's own folder"), "{s}");
    assert!(s.contains("PIX2PIX_SHARD_COUNT") && s.contains("SLURM_ARRAY_TASK_ID"), "{s}");
}

/// `batch = 3`: seven images of two sizes (and a broken one) give the outputs of `batch = 1`
/// to within one 8-bit level (each image normalised by its own statistics); the broken image
/// fails alone.
#[test]
fn batches_give_the_results_of_single_images() {
    let t = TempDir::new("pipe-batch");
    std::fs::copy(fixture("unet256_ngf8_batch"), t.join("model.safetensors")).unwrap();
    let mut names = Vec::new();
    for k in 0..7u32 {
        let (w, h) = if k % 2 == 0 { (200, 150) } else { (130, 90) };
        let name = format!("i{k}.png");
        save(&rgb(w, h, 10 + k), &t.join(&format!("in/{name}")));
        names.push(name);
    }
    std::fs::write(t.join("in/i3b_broken.png"), b"\x89PNG\r\n\x1a\ntruncated").unwrap();
    let config = |batch: usize| {
        format!(
            "workers = 2\nbatch = {batch}\n[input]\npaths = [\"in\"]\n[output]\ndir = \"out{batch}\"\n\
             name = \"{{stem}}.png\"\n[[model]]\nname = \"m\"\npath = \"model.safetensors\"\n\
             [[step]]\nop = \"translate\"\nmodel = \"m\"\n"
        )
    };
    for batch in [1, 3] {
        let toml = t.join(&format!("b{batch}.toml"));
        std::fs::write(&toml, config(batch)).unwrap();
        let out = run(&mut pipeline(&toml));
        let s = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "{s}");
        assert!(s.contains("processed 7, skipped 0, failed 1"), "batch {batch}: {s}");
        assert!(s.contains("i3b_broken.png"), "{s}");
        assert_eq!(files(&t.join(&format!("out{batch}"))), names, "batch {batch}");
    }
    for name in &names {
        let one = image::open(t.join("out1").join(name)).unwrap().to_rgb8();
        let three = image::open(t.join("out3").join(name)).unwrap().to_rgb8();
        assert_eq!(one.dimensions(), three.dimensions(), "{name}");
        let d = one.as_raw().iter().zip(three.as_raw()).map(|(a, b)| a.abs_diff(*b)).max();
        assert!(d.unwrap_or(0) <= 1, "{name}: batch 3 differs from batch 1 by {d:?} levels");
    }
}
