//! The memory budget through the host binary: `host run` of an image whose pad-policy estimate
//! exceeds `--memory-budget` fails with a message naming the estimate and the budget, a non-zero
//! exit code and no output file, while the tile policy translates it within the same budget;
//! `host pipeline` takes the budget from `[[model]] memory_budget_mb` or `--memory-budget`, and
//! refuses resize steps beyond their documented range before any image is read.

mod host_common;

use std::path::Path;

use host_common::*;

fn translate(t: &TempDir, dest: &Path, policy: &str, budget: &str) -> std::process::Output {
    run(host(&["run", "--plugin"])
        .arg(plugin())
        .arg("--model")
        .arg(fixture(UNET128))
        .arg("--input")
        .arg(t.join("big.png"))
        .arg("--output")
        .arg(dest)
        .args(["--size-policy", policy, "--memory-budget", budget]))
}

#[test]
fn run_refuses_over_budget_and_tile_fits() {
    let t = TempDir::new("budget-run");
    save(&rgb(2000, 1500, 3), &t.join("big.png"));
    let dest = t.join("out.png");
    let o = translate(&t, &dest, "pad", "400");
    assert_ne!(o.status.code(), Some(0));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(all.contains("translating a 2000x1500 image with the pad policy needs about"), "{all}");
    assert!(all.contains("over the memory budget of 400.0 MiB (set by the caller"), "{all}");
    assert!(all.contains("--memory-budget <MiB>"), "{all}");
    assert!(all.contains("the tile policy needs about"), "{all}");
    assert!(!dest.exists(), "no output for a refused image");
    assert_eq!(files(t.path()), ["big.png"], "nothing half-written");

    let o = translate(&t, &dest, "tile", "400");
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(size_of(&dest), (2000, 1500));
}

fn pipeline(t: &TempDir, toml: &str, extra: &[&str]) -> std::process::Output {
    std::fs::copy(fixture(UNET128), t.join("m.safetensors")).unwrap();
    std::fs::write(t.join("p.toml"), toml).unwrap();
    run(host(&["pipeline"]).arg(t.join("p.toml")).arg("--plugin").arg(plugin()).args(extra))
}

const HEAD: &str = "[input]\npaths = [\"in/\"]\n[output]\ndir = \"out\"\n";

#[test]
fn pipeline_budget_from_the_model_table_and_the_command_line() {
    let t = TempDir::new("budget-pipe");
    save(&rgb(2000, 1500, 3), &t.join("in/big.png"));
    let toml = format!(
        "{HEAD}[[model]]\nname = \"m\"\npath = \"m.safetensors\"\nmemory_budget_mb = 400\n[[step]]\nop = \"translate\"\nsize_policy = \"pad\"\n"
    );
    let o = pipeline(&t, &toml, &[]);
    assert_eq!(o.status.code(), Some(1));
    let s = stdout(&o);
    assert!(s.contains("over the memory budget of 400.0 MiB"), "{s}");
    assert!(files(&t.join("out")).is_empty(), "{s}");
    // The command line overrides the table: a budget the estimate fits.
    let o = pipeline(&t, &toml, &["--memory-budget", "8192"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(size_of(&t.join("out/big.png")), (2000, 1500));
}

#[test]
fn pipeline_resize_beyond_its_range_is_a_config_error() {
    let t = TempDir::new("budget-resize");
    save(&rgb(64, 64, 3), &t.join("in/a.png"));
    let step =
        |w: u32, h: u32| format!("{HEAD}[[step]]\nop = \"resize\"\nwidth = {w}\nheight = {h}\n");
    let o = pipeline(&t, &step(100_000, 100_000), &[]);
    assert_eq!(o.status.code(), Some(2), "a configuration error");
    let e = stderr(&o);
    assert!(e.contains("p.toml:7:9: [[step]] #1, key `width`: width 100000 exceeds 65535"), "{e}");
    let o = pipeline(&t, &step(60_000, 60_000), &[]);
    let e = stderr(&o);
    assert!(
        e.contains(
            "[[step]] #1, key `width`: width × height = 60000x60000 exceeds 268435456 pixels"
        ),
        "{e}"
    );
    assert!(!t.join("out").exists() || files(&t.join("out")).is_empty());
}
