//! `host bench`, `host eval` and `host train` (with Ctrl-C and --resume) end to end.

mod host_common;

use std::process::{Command, Stdio};

use host_common::*;

#[test]
fn bench_prints_medians_on_its_last_lines() {
    let out = run(host(&["bench", "--plugin"]).arg(plugin()).args([
        "--net-g", "unet_128", "--ngf", "8", "--size", "128", "--iters", "3", "--warmup", "1",
        "--train",
    ]));
    assert!(out.status.success());
    let s = stdout(&out);
    let lines: Vec<&str> = s.lines().collect();
    let n = lines.len();
    assert!(n >= 2, "{s}");
    let value = |line: &str, key: &str| -> f64 {
        let v =
            line.strip_prefix(key).unwrap_or_else(|| panic!("{line:?} should start with {key}"));
        v.trim().parse().unwrap_or_else(|_| panic!("{line:?}"))
    };
    assert!(value(lines[n - 2], "infer_ms ") > 0.0);
    assert!(value(lines[n - 1], "train_step_ms ") > 0.0);
    assert!(stderr(&out).contains("batch statistics"), "batch statistics are the default");

    let out = run(host(&["bench", "--plugin"]).arg(plugin()).args([
        "--net-g",
        "unet_128",
        "--ngf",
        "8",
        "--size",
        "128",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--norm-stats",
        "running",
    ]));
    assert!(out.status.success());
    assert!(stderr(&out).contains("running statistics"));
    assert!(value(stdout(&out).lines().last().unwrap_or(""), "infer_ms ") > 0.0);
}

#[test]
fn eval_prints_metrics_last_and_writes_html() {
    let t = TempDir::new("eval");
    for i in 0..3 {
        save(&rgb(256, 128, i), &t.join(&format!("data/{i}.png")));
    }
    let out = run(host(&["eval", "--plugin"])
        .arg(plugin())
        .arg("--model")
        .arg(fixture(UNET128))
        .arg("--data")
        .arg(t.join("data"))
        .arg("--html")
        .arg(t.join("html"))
        .args(["--direction", "AtoB", "--size", "128"]));
    assert!(out.status.success());
    let s = stdout(&out);
    let last: Vec<&str> = s.lines().last().unwrap_or("").split_whitespace().collect();
    assert_eq!(last.len(), 6, "{s}");
    assert_eq!((last[0], last[2], last[4]), ("mae", "psnr", "ssim"), "{s}");
    assert!(last.iter().skip(1).step_by(2).all(|v| v.parse::<f64>().is_ok()), "{s}");
    assert!(t.join("html/index.html").is_file());
}

#[test]
fn train_stops_on_ctrl_c_with_a_checkpoint_and_resumes() {
    let t = TempDir::new("train");
    for i in 0..4 {
        save(&rgb(256, 128, i), &t.join(&format!("data/train/{i}.png")));
    }
    let config = |max_steps: u64| {
        format!(
            "[data]\nroot = \"data\"\nload_size = 128\ncrop_size = 128\n[model]\nnet_g = \"unet_128\"\nngf = 8\nndf = 8\n\
             [train]\nn_epochs = 1000\nn_epochs_decay = 0\nmax_steps = {max_steps}\n[output]\ndir = \"ckpt\"\n"
        )
    };
    std::fs::write(t.join("train.toml"), config(100_000)).unwrap();
    let mut child = Command::new(host_bin())
        .args(["train", "--config", "train.toml", "--plugin"])
        .arg(plugin())
        .current_dir(t.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once steps are being logged.
    let start = std::time::Instant::now();
    while std::fs::read_to_string(t.join("ckpt/losses.csv")).map_or(0, |s| s.lines().count()) < 3
        && start.elapsed().as_secs() < 120
        && matches!(child.try_wait(), Ok(None))
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let out = child.wait_with_output().unwrap();
    let s = stdout(&out);
    eprintln!("{s}{}", stderr(&out));
    assert_eq!(out.status.code(), Some(130), "{s}");
    assert!(s.contains("cancelled after") && s.contains("--resume"), "{s}");
    assert!(t.join("ckpt/latest/generator.safetensors").is_file());
    let steps: u64 = s
        .split("cancelled after ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();

    std::fs::write(t.join("train.toml"), config(steps + 2)).unwrap();
    let out = run(host(&["train", "--config", "train.toml", "--resume", "--plugin"])
        .arg(plugin())
        .current_dir(t.path()));
    assert!(out.status.success());
    assert!(
        stdout(&out).contains(&format!("trained 2 steps from step {steps} to step {}", steps + 2)),
        "{}",
        stdout(&out)
    );

    // Resuming a run that has reached its end trains nothing, and says so.
    let out = run(host(&["train", "--config", "train.toml", "--resume", "--plugin"])
        .arg(plugin())
        .current_dir(t.path()));
    assert!(out.status.success());
    let s = stdout(&out);
    assert!(
        s.contains("nothing to train: the run in ")
            && s.contains(&format!("already complete at step {}", steps + 2)),
        "{s}"
    );
    assert!(!s.contains("trained"), "{s}");
    let logged = std::fs::read_to_string(t.join("ckpt/losses.csv")).unwrap().lines().count();
    assert_eq!(
        logged,
        1 + steps as usize + 2,
        "header and one line per step, none added by the no-op resume"
    );
}

/// `host train --print-config`: every key at its default, a config the trainer accepts as it is.
#[test]
fn train_print_config_is_a_full_default_config() {
    let out = run(host(&["train", "--print-config", "--plugin"]).arg(plugin()));
    assert!(out.status.success());
    let text = stdout(&out);
    for section in ["[data]", "[model]", "[train]", "[output]"] {
        assert!(text.lines().any(|l| l == section), "no {section} in:\n{text}");
    }
    for key in
        ["crop_size = 256", "net_g = \"unet_256\"", "lambda_l1 = 100.0", "save_every_steps = 5000"]
    {
        assert!(text.contains(key), "no `{key}` in:\n{text}");
    }
    // The printed config, pointed at a tiny dataset and run length, trains.
    let t = TempDir::new("print-config");
    for i in 0..2 {
        save(&rgb(256, 128, i), &t.join(&format!("data/train/{i}.png")));
    }
    let edited = text
        .replace("root = \"datasets/facades\"", "root = \"data\"")
        .replace("net_g = \"unet_256\"", "net_g = \"unet_128\"")
        .replace("load_size = 286", "load_size = 128")
        .replace("crop_size = 256", "crop_size = 128")
        .replace("ngf = 64", "ngf = 8")
        .replace("ndf = 64", "ndf = 8")
        .replace("# max_steps = 1000", "max_steps = 1");
    std::fs::write(t.join("train.toml"), edited).unwrap();
    let out = run(host(&["train", "--config", "train.toml", "--plugin"])
        .arg(plugin())
        .current_dir(t.path()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("trained 1 steps"), "{}", stdout(&out));
    assert!(t.join("checkpoints/experiment_name/latest/generator.safetensors").is_file());
}

/// `host … | head`: a reader that goes away early ends the host quietly (SIGPIPE, as other Unix
/// tools), without a panic message.
#[test]
fn closed_stdout_ends_quietly() {
    let mut child = host(&["info"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Our end of the pipe closes before the host (still loading its plugin) writes a line.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "host panicked on a closed pipe: {err}");
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "status {:?}, stderr: {err}",
        out.status
    );
}

/// `host info --model`: the architecture read off a checkpoint, here a fixture whose folder name
/// says what it is.
#[test]
fn info_describes_a_model() {
    let out = run(host(&["info", "--plugin"]).arg(plugin()).arg("--model").arg(fixture(UNET128)));
    assert!(out.status.success());
    let s = stdout(&out);
    assert!(s.contains("network unet_128, ngf 8, instance norm, 3 → 3 channels"), "{s}");
    assert!(s.contains("native 128×128") && s.contains("multiples of 128"), "{s}");
    let out =
        run(host(&["info", "--plugin"]).arg(plugin()).args(["--model", "/nonexistent/model.pth"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/model.pth"), "{}", stderr(&out));
}

/// `host bench --help` names every "ours, …" column of the README's performance table with the
/// options that reproduce it.
#[test]
fn bench_help_maps_the_readme_columns() {
    let out = run(&mut host(&["bench", "--help"]));
    assert!(out.status.success());
    let help = stdout(&out);
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let header = readme
        .lines()
        .find(|l| l.starts_with("| configuration |"))
        .expect("the README's performance table");
    let ours: Vec<&str> =
        header.split('|').map(str::trim).filter(|c| c.starts_with("ours")).collect();
    assert_eq!(ours.len(), 4, "{header}");
    for column in ours {
        assert!(
            help.contains(column),
            "`host bench --help` does not name the README column {column:?}:\n{help}"
        );
    }
    for option in
        ["--ngf", "--batch", "--size", "--net-g", "--norm-stats", "--train", "--precision"]
    {
        let line = help
            .lines()
            .position(|l| l.trim_start().starts_with(option))
            .unwrap_or_else(|| panic!("{option} missing:\n{help}"));
        let described = help
            .lines()
            .nth(line + 1)
            .is_some_and(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"));
        assert!(described, "{option} has no description:\n{help}");
    }
}
