//! Careless and hostile use of `host` that must not cost the user a file or hang (issue 13):
//! outputs over inputs, pipelines rereading their own outputs, output names leaving the output
//! folder, two runs in one folder, training over a finished run, diverging training, truncated
//! JPEGs, special files as paths, backtraces in messages, temporaries of killed runs.

mod host_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use host_common::*;
use pix2pix_ffi::output_lock::{FolderLock, Mode, LOCK_FILE};

/// Every file under `dir` with a checksum of its bytes (FNV-1a): what "unchanged" compares.
fn checksums(dir: &Path) -> BTreeMap<String, u64> {
    files(dir)
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(dir.join(&f)).unwrap();
            let sum = bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
            });
            (f, sum)
        })
        .collect()
}

fn pipeline(config: &Path) -> Command {
    let mut c = host(&["pipeline"]);
    c.arg(config).arg("--plugin").arg(plugin());
    c
}

fn host_run(args: &[&str]) -> Command {
    let mut c = host(&["run", "--plugin"]);
    c.arg(plugin()).args(args);
    c
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs `cmd`, failing the test (and killing it) if it takes longer than `secs`: a hang is a
/// failure here, not a stuck test run.
fn run_within(cmd: &mut Command, secs: u64) -> Output {
    let mut child =
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("cannot start host");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            panic!("host did not finish within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    eprintln!("status {:?}\nstdout:\n{}\nstderr:\n{}", out.status, stdout(&out), stderr(&out));
    out
}

fn inputs(dir: &Path, n: u32) {
    for i in 0..n {
        save(&rgb(48, 32, i), &dir.join(format!("{i:02}.png")));
    }
}

#[test]
fn run_refuses_to_write_over_its_inputs() {
    let t = TempDir::new("guard-run-self");
    inputs(&t.join("d"), 2);
    let before = checksums(t.path());
    // A folder onto itself: every output would be an input.
    let out = run(&mut host_run(&[
        "--model",
        p(&fixture(UNET128)),
        "--input",
        p(&t.join("d")),
        "--output",
        p(&t.join("d")),
    ]));
    assert_eq!(out.status.code(), Some(2));
    let want = format!(
        "error: the output {0} is the input {0}: refusing to overwrite an input",
        t.join("d/00.png").display()
    );
    assert!(stderr(&out).starts_with(&want), "{}", stderr(&out));
    // A file onto itself, and onto a hard link of itself.
    std::fs::hard_link(t.join("d/01.png"), t.join("link.png")).unwrap();
    let before = {
        let mut b = before;
        b.insert("link.png".into(), checksums(t.path())["link.png"]);
        b
    };
    for target in ["d/01.png", "link.png"] {
        let out = run(&mut host_run(&[
            "--model",
            p(&fixture(UNET128)),
            "--input",
            p(&t.join("d/01.png")),
            "--output",
            p(&t.join(target)),
        ]));
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains(&format!(
                "is the input {}: refusing to overwrite an input; choose another output file",
                t.join("d/01.png").display()
            )),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(checksums(t.path()), before, "inputs changed");
}

fn flip_pipeline(t: &TempDir, input: &str, dir: &str, name: &str, overwrite: bool) -> PathBuf {
    let path = t.join("p.toml");
    std::fs::write(&path, format!("[input]\npaths = [{input:?}]\n[output]\ndir = {dir:?}\nname = {name:?}\noverwrite = {overwrite}\n[[step]]\nop = \"flip\"\n")).unwrap();
    path
}

#[test]
fn pipelines_never_overwrite_or_reread_their_inputs() {
    let t = TempDir::new("guard-pipe-self");
    inputs(&t.join("in"), 3);
    let originals = checksums(&t.join("in"));
    // Outputs beside the inputs, distinct names: a rerun must not translate its own outputs.
    let config = flip_pipeline(&t, "in", "in", "{stem}_out.png", true);
    for round in 0..2 {
        let out = run(&mut pipeline(&config));
        assert!(out.status.success(), "round {round}");
        assert!(
            stdout(&out).contains("processed 3, skipped 0, failed 0"),
            "round {round}: {}",
            stdout(&out)
        );
        if round == 1 {
            assert!(
                stderr(&out).contains(
                    "3 earlier outputs of this pipeline found among the inputs and left out"
                ),
                "{}",
                stderr(&out)
            );
        }
    }
    let names = files(&t.join("in"));
    assert_eq!(names, ["00.png", "00_out.png", "01.png", "01_out.png", "02.png", "02_out.png"]);
    // The outputs are flips of the originals, not of earlier outputs.
    for i in 0..3 {
        let a = image::open(t.join(&format!("in/{i:02}.png"))).unwrap().fliph();
        assert_eq!(
            image::open(t.join(&format!("in/{i:02}_out.png"))).unwrap().to_rgb8(),
            a.to_rgb8()
        );
    }
    // Names equal to the inputs' with overwrite = true: refused before anything is written.
    let config = flip_pipeline(&t, "in", "in", "{name}", true);
    let before = checksums(&t.join("in"));
    let out = run(&mut pipeline(&config));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!(
            "the output {0} is the input {0}: refusing to overwrite an input",
            t.join("in/00.png").display()
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(checksums(&t.join("in")), before);
    for (f, sum) in originals {
        assert_eq!(before[&f], sum, "{f} changed");
    }

    // Output folder inside a recursively searched input folder: its files are left out too.
    let config = t.join("r.toml");
    std::fs::write(&config, "[input]\npaths = [\"in\"]\nrecursive = true\n[output]\ndir = \"in/flipped\"\nname = \"{stem}.png\"\noverwrite = true\n[[step]]\nop = \"flip\"\n").unwrap();
    for _ in 0..2 {
        let out = run(&mut pipeline(&config));
        assert!(out.status.success());
        assert!(stdout(&out).contains("processed 6, skipped 0, failed 0"), "{}", stdout(&out));
    }
    assert_eq!(files(&t.join("in/flipped")).len(), 6);
}

#[test]
fn output_names_cannot_leave_the_output_folder() {
    let t = TempDir::new("guard-names");
    inputs(&t.join("in"), 1);
    std::fs::create_dir_all(t.join("work/out")).unwrap();
    let abs = t.join("abs");
    let cases = [
        ("../../x_{stem}.png", "has a `..` component"),
        (&*format!("{}/x_{{stem}}.png", abs.display()), "is an absolute path"),
        ("{stem}/../../../x_{stem}.png", "has a `..` component"),
    ];
    for (name, why) in cases {
        let config = t.join("work/p.toml");
        std::fs::write(&config, format!("[input]\npaths = [\"../in\"]\n[output]\ndir = \"out\"\nname = {name:?}\n[[step]]\nop = \"flip\"\n")).unwrap();
        let out = run(&mut pipeline(&config));
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = stderr(&out);
        assert!(
            err.contains("[output], key `name`") && err.contains(&format!("{name:?} {why}")),
            "{name}: {err}"
        );
    }
    // What a placeholder brings in: a model named with `..`.
    let config = t.join("work/p.toml");
    std::fs::write(
        &config,
        format!("[input]\npaths = [\"../in\"]\n[output]\ndir = \"out\"\nname = \"{{model}}_{{stem}}.png\"\n[[model]]\nname = \"../esc\"\npath = {:?}\n[[step]]\nop = \"translate\"\n", p(&fixture(UNET128))),
    )
    .unwrap();
    let out = run(&mut pipeline(&config));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("output.name \"{model}_{stem}.png\" gives \"../esc_00.png\"")
            && stderr(&out).contains("has a `..` component"),
        "{}",
        stderr(&out)
    );
    // A symbolic link inside the output folder that points out of it.
    std::os::unix::fs::symlink(t.join("abs"), t.join("work/out/sub")).unwrap();
    std::fs::create_dir_all(&abs).unwrap();
    std::fs::write(&config, "[input]\npaths = [\"../in\"]\n[output]\ndir = \"out\"\nname = \"sub/{stem}.png\"\n[[step]]\nop = \"flip\"\n").unwrap();
    let out = run(&mut pipeline(&config));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("output.name \"sub/{stem}.png\" gives \"sub/00.png\"")
            && stderr(&out).contains("outside output.dir"),
        "{}",
        stderr(&out)
    );
    // Nothing was written anywhere but the inputs and configs.
    assert_eq!(files(t.path()), ["in/00.png", "work/p.toml"]);
}

#[test]
fn a_locked_output_folder_is_refused_with_the_holder() {
    let t = TempDir::new("guard-locked");
    inputs(&t.join("in"), 2);
    std::fs::create_dir_all(t.join("out")).unwrap();
    let config = flip_pipeline(&t, "in", "out", "{stem}.png", false);
    let held = FolderLock::acquire(&t.join("out"), LOCK_FILE, Mode::Exclusive, || {}).unwrap();
    let want = format!(
        "output folder {} is in use by another run (pid {})",
        t.join("out").display(),
        std::process::id()
    );
    for shard in [None, Some("0/2")] {
        let mut cmd = pipeline(&config);
        if let Some(s) = shard {
            cmd.args(["--shard", s]);
        }
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(stderr(&out).trim(), format!("error: {want}"));
    }
    let out = run(&mut host_run(&[
        "--model",
        p(&fixture(UNET128)),
        "--input",
        p(&t.join("in")),
        "--output",
        p(&t.join("out")),
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
    assert_eq!(files(&t.join("out")), [LOCK_FILE]);
    drop(held);
    let out = run(&mut pipeline(&config));
    assert!(out.status.success());
    // A finished run leaves no lock file.
    assert_eq!(files(&t.join("out")), ["00.png", "01.png"]);
}

fn processed(out: &Output) -> usize {
    let s = stdout(out);
    let line = s
        .lines()
        .find(|l| l.starts_with("processed "))
        .unwrap_or_else(|| panic!("no summary: {s}"));
    line["processed ".len()..].split(',').next().unwrap().parse().unwrap()
}

#[test]
fn concurrent_pipelines_on_one_folder_write_each_result_once() {
    let t = TempDir::new("guard-concurrent");
    let n = 40;
    inputs(&t.join("in"), n);
    let config = flip_pipeline(&t, "in", "out", "{stem}.png", false);
    // Two unsharded runs: each either runs or is refused for the lock; every output is
    // written by exactly one of them.
    let spawn = |args: &[&str]| {
        pipeline(&config).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    };
    let (a, b) = (spawn(&[]), spawn(&[]));
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let mut written = 0;
    for o in &outs {
        eprintln!("{}{}", stdout(o), stderr(o));
        match o.status.code() {
            Some(0) => written += processed(o),
            Some(2) => {
                assert!(stderr(o).contains("is in use by another run (pid "), "{}", stderr(o))
            }
            c => panic!("unexpected status {c:?}"),
        }
    }
    assert_eq!(written, n as usize);
    assert_eq!(files(&t.join("out")).len(), n as usize);
    assert_all_complete(&t.join("out"));

    // The shards of one pipeline share the folder and run at the same time.
    std::fs::remove_dir_all(t.join("out")).unwrap();
    let (a, b) = (spawn(&["--shard", "0/2"]), spawn(&["--shard", "1/2"]));
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    for o in &outs {
        assert!(o.status.success(), "{}", stderr(o));
        assert_eq!(processed(o), n as usize / 2);
    }
    assert_eq!(files(&t.join("out")).len(), n as usize);
    assert_all_complete(&t.join("out"));
}

#[test]
fn temporaries_of_killed_runs_are_removed_on_the_next_start() {
    let t = TempDir::new("guard-stale");
    inputs(&t.join("in"), 2);
    std::fs::create_dir_all(t.join("out")).unwrap();
    // A pid that cannot be alive (above pid_max), our own pid (alive), and a file that only
    // looks similar.
    let dead = ".00.png.4194305-0.tmp";
    let alive = format!(".01.png.{}-3.tmp", std::process::id());
    for f in [dead, &alive, ".notes.tmp", "keep.tmp"] {
        std::fs::write(t.join("out").join(f), b"partial").unwrap();
    }
    let config = flip_pipeline(&t, "in", "out", "{stem}.png", false);
    let out = run(&mut pipeline(&config));
    assert!(out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "removed {}, left by an interrupted run",
            t.join("out").join(dead).display()
        )),
        "{}",
        stderr(&out)
    );
    let mut want = vec![
        alive.clone(),
        ".notes.tmp".into(),
        "00.png".into(),
        "01.png".into(),
        "keep.tmp".into(),
    ];
    want.sort();
    assert_eq!(files(&t.join("out")), want);

    // `host run` to one file cleans that file's own temporaries.
    std::fs::write(t.join("out").join(".single.png.4194305-1.tmp"), b"partial").unwrap();
    let out = run(&mut host_run(&[
        "--model",
        p(&fixture(UNET128)),
        "--input",
        p(&t.join("in/00.png")),
        "--output",
        p(&t.join("out/single.png")),
    ]));
    assert!(out.status.success());
    assert!(!t.join("out/.single.png.4194305-1.tmp").exists());
    assert!(t.join("out").join(&alive).exists());
}

#[test]
fn truncated_jpegs_fail_with_their_name() {
    let t = TempDir::new("guard-jpeg");
    save(&rgb(96, 64, 1), &t.join("in/whole.jpg"));
    let bytes = std::fs::read(t.join("in/whole.jpg")).unwrap();
    std::fs::write(t.join("in/cut.jpg"), &bytes[..bytes.len() * 2 / 3]).unwrap();
    // The decoder alone takes the cut file (it fills the rest with gray): the check is ours.
    assert!(
        image::open(t.join("in/cut.jpg")).is_ok(),
        "the image crate now rejects truncated JPEGs itself"
    );
    let config = flip_pipeline(&t, "in", "out", "{stem}.png", false);
    let out = run(&mut pipeline(&config));
    assert_eq!(out.status.code(), Some(1));
    let s = stdout(&out);
    assert!(s.contains("processed 1, skipped 0, failed 1"), "{s}");
    assert!(s.contains(&format!("failed: {}: truncated JPEG: the file ends inside the image data, before its end-of-image marker", t.join("in/cut.jpg").display())), "{s}");
    assert_eq!(files(&t.join("out")), ["whole.png"]);
}

#[test]
fn special_files_get_the_precise_reason() {
    let t = TempDir::new("guard-special");
    inputs(&t.join("in"), 1);
    let fifo = t.join("fifo.safetensors");
    let c = std::ffi::CString::new(p(&fifo)).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink(t.join("loop"), t.join("loop")).unwrap();
    let cases = [
        (t.path().to_path_buf(), "is a folder, not a file"),
        (PathBuf::from("/dev/zero"), "is a character device, not a regular file"),
        (fifo.clone(), "is a named pipe (FIFO), not a regular file"),
        (t.join("loop"), "a loop of symbolic links"),
        (t.join("missing.safetensors"), "no such file"),
    ];
    let input = t.join("in/00.png");
    for (model, why) in &cases {
        let out = run_within(
            &mut host_run(&[
                "--model",
                p(model),
                "--input",
                p(&input),
                "--output",
                p(&t.join("o.png")),
            ]),
            60,
        );
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(stderr(&out).trim(), format!("error: model {}: {why}", model.display()));
    }
    for (spec, why) in &cases[1..4] {
        let out = run_within(
            &mut host_run(&[
                "--model",
                p(&fixture(UNET128)),
                "--input",
                p(spec),
                "--output",
                p(&t.join("o.png")),
            ]),
            60,
        );
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(stderr(&out).trim(), format!("error: input {0}: {why} ({0})", spec.display()));
    }
    // A FIFO with an image name inside an input folder fails alone, without blocking the run.
    let c = std::ffi::CString::new(p(&t.join("in/pipe.png"))).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let out = run_within(&mut pipeline(&flip_pipeline(&t, "in", "out", "{stem}.png", false)), 60);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(&format!(
            "failed: {}: is a named pipe (FIFO), not a regular file",
            t.join("in/pipe.png").display()
        )),
        "{}",
        stdout(&out)
    );
    assert!(!t.join("o.png").exists());
}

#[test]
fn errors_from_inside_the_network_are_one_line_even_with_rust_backtrace() {
    let t = TempDir::new("guard-one-line");
    inputs(&t.join("in"), 1);
    // The fixture with its first convolution cut to two input channels (no image layout has
    // two colour channels): it loads (the architecture is read off the file) and fails on an
    // RGB image inside the network.
    let st = std::fs::read(fixture(UNET128)).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&st).unwrap();
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in tensors.tensors() {
        let (mut shape, mut data) = (view.shape().to_vec(), view.data().to_vec());
        if name == "model.model.0.weight" {
            let (o, c, k) = (shape[0], shape[1], shape[2] * shape[3] * 4);
            data =
                (0..o).flat_map(|i| view.data()[i * c * k..i * c * k + 2 * k].to_vec()).collect();
            shape[1] = 2;
        }
        owned.push((name, shape, data));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &t.join("gray_in.safetensors")).unwrap();

    let out = run(host_run(&[
        "--model",
        p(&t.join("gray_in.safetensors")),
        "--input",
        p(&t.join("in/00.png")),
        "--output",
        p(&t.join("o.png")),
    ])
    .env("RUST_BACKTRACE", "1"));
    assert_eq!(out.status.code(), Some(1));
    let s = stdout(&out);
    let failed: Vec<&str> = s.lines().filter(|l| l.starts_with("failed: ")).collect();
    assert_eq!(
        failed,
        [format!(
            "failed: {}: step 1 (translate): invalid model input channels: 2 (images give 1 \
             (gray) or 3 (RGB); the model cannot take them)",
            t.join("in/00.png").display()
        )],
        "{s}"
    );
    assert!(
        !s.contains("stack backtrace") && !s.contains(" 0: ") && !stderr(&out).contains(" 0: "),
        "{s}{}",
        stderr(&out)
    );
}

const TRAIN: &str = "[data]\nroot = \"{data}\"\ndirection = \"BtoA\"\nload_size = 128\ncrop_size = 128\n[model]\nnet_g = \"unet_128\"\nngf = 4\nndf = 4\n[train]\nmax_steps = 2\nlr = {lr}\n[output]\ndir = \"{out}\"\nsave_every_steps = 1\nsample_every_steps = 0\n";

fn train_config(t: &TempDir, lr: &str, max_steps: u64) -> PathBuf {
    let text = TRAIN
        .replace("{data}", p(&root().join("examples/facades")))
        .replace("{lr}", lr)
        .replace("{out}", p(&t.join("run")))
        .replace("max_steps = 2", &format!("max_steps = {max_steps}"));
    let path = t.join(&format!("train-{lr}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn host_train(config: &Path, extra: &[&str]) -> Command {
    let mut c = host(&["train", "--plugin"]);
    c.arg(plugin()).arg("--config").arg(config).args(extra);
    c
}

#[test]
fn training_never_starts_over_a_run_unasked_and_locks_its_folder() {
    let t = TempDir::new("guard-train");
    let config = train_config(&t, "2e-4", 2);
    let out = run(&mut host_train(&config, &[]));
    assert!(out.status.success());
    let before = checksums(&t.join("run"));
    assert!(
        before.contains_key("latest/generator.safetensors") && before.contains_key("losses.csv"),
        "{before:?}"
    );

    let out = run(&mut host_train(&config, &[]));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "output folder {} holds a training run (latest, losses.csv, 2 step_* folders)",
            t.join("run").display()
        )) && err.contains("host train --resume")
            && err.contains("host train --overwrite"),
        "{err}"
    );
    assert_eq!(checksums(&t.join("run")), before, "the refused run touched the folder");

    // Another run holding the folder: refused, naming its pid.
    let held = FolderLock::acquire(&t.join("run"), LOCK_FILE, Mode::Exclusive, || {}).unwrap();
    let out = run(&mut host_train(&config, &["--resume"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!(
            "output folder {} is in use by another run (pid {})",
            t.join("run").display(),
            std::process::id()
        )),
        "{}",
        stderr(&out)
    );
    drop(held);

    let out = run(&mut host_train(&config, &["--overwrite"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let after = checksums(&t.join("run"));
    assert!(!after.contains_key(LOCK_FILE));
    // Same seed and steps: the new run rewrote the same checkpoint.
    assert_eq!(after["latest/generator.safetensors"], before["latest/generator.safetensors"]);
}

#[test]
fn diverging_training_stops_and_keeps_only_finite_checkpoints() {
    let t = TempDir::new("guard-nan");
    let config = train_config(&t, "1e30", 8);
    let out = run(&mut host_train(&config, &[]));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("training diverged"), "{err}");
    assert!(
        err.contains("is NaN") || err.contains("is inf") || err.contains("non-finite values"),
        "{err}"
    );
    // Whatever was saved holds finite numbers only, and the log has no non-finite row.
    for f in files(&t.join("run")).iter().filter(|f| {
        f.ends_with("generator.safetensors") || f.ends_with("discriminator.safetensors")
    }) {
        let bytes = std::fs::read(t.join("run").join(f)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (name, v) in st.tensors() {
            assert!(
                v.data()
                    .chunks_exact(4)
                    .all(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite()),
                "{f} {name}"
            );
        }
    }
    let log = std::fs::read_to_string(t.join("run/losses.csv")).unwrap();
    assert!(!log.to_ascii_lowercase().contains("nan") && !log.contains("inf"), "{log}");
}
