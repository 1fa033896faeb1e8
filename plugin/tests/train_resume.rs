//! Resume and checkpoint safety: 6 steps in one run and 3 + resume + 3 give bit-identical
//! weights and optimiser state; a cancel saves first; a checkpoint folder never holds a partial
//! or temporary file, and a failed or interrupted save leaves the previous checkpoint intact.

mod common;

use std::path::Path;

use common::{examples, TempDir};
use pix2pix::train::state::{self, FileWriter, DISCRIMINATOR, GENERATOR, LATEST, STATE};
use pix2pix::train::{self as train, Progress};

/// A tiny run over the 8 example pairs: unet_128 with dropout, batch 2 (4 steps per epoch,
/// so the schedule's decay starts at step 5), samples every 2 steps.
fn config(dir: &Path, max_steps: u64) -> String {
    format!(
        r#"
[data]
root = '{}'
direction = "BtoA"
load_size = 143
crop_size = 128

[model]
net_g = "unet_128"
ngf = 4
ndf = 4

[train]
batch_size = 2
n_epochs = 1
n_epochs_decay = 1
seed = 7
max_steps = {max_steps}

[output]
dir = '{}'
save_every_steps = 4
sample_every_steps = 2
"#,
        examples().display(),
        dir.display()
    )
}

fn run(dir: &Path, max_steps: u64, resume: bool) -> Vec<Progress> {
    let mut seen = Vec::new();
    let s = train::train(&config(dir, max_steps), resume, &mut |p| {
        seen.push(*p);
        true
    })
    .unwrap();
    assert!(!s.cancelled);
    assert_eq!(s.steps, max_steps);
    assert_eq!(s.pairs, 8);
    assert!(s.skipped.is_empty());
    seen
}

fn tensors(path: &Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap()
}

fn assert_same_tensors(a: &Path, b: &Path) {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(ta.len(), tb.len(), "{}", a.display());
    for (k, x) in &ta {
        let y = &tb[k];
        assert_eq!(x.dtype(), y.dtype(), "{k}");
        let (x, y) = (
            x.to_dtype(candle_core::DType::F64).unwrap(),
            y.to_dtype(candle_core::DType::F64).unwrap(),
        );
        let (x, y): (Vec<f64>, Vec<f64>) = (
            x.flatten_all().unwrap().to_vec1().unwrap(),
            y.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert!(
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{}: `{k}` differs",
            a.display()
        );
    }
}

/// Only checkpoint folders with exactly their three files, the log and the PNGs; nothing hidden.
fn assert_tidy(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "leftover {name} in {}", dir.display());
        if name == LATEST || name.starts_with("step_") {
            let mut files: Vec<String> = std::fs::read_dir(e.path())
                .unwrap()
                .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            assert_eq!(files, [DISCRIMINATOR, GENERATOR, STATE], "{name}");
        } else {
            assert!(
                ["losses.csv", "loss_curve.png", "samples"].contains(&name.as_str()),
                "unexpected {name}"
            );
        }
    }
}

#[test]
fn resume_is_exact() {
    let (a, b) = (TempDir::new("resume-a"), TempDir::new("resume-b"));
    let full = run(&a.0, 6, false);
    let first = run(&b.0, 3, false);
    let second = run(&b.0, 6, true);
    assert_eq!(first.last().unwrap().step, 3);
    assert_eq!(second.first().unwrap().step, 4);
    // Same losses and learning rates step by step (the decay starts in epoch 2, step 5).
    let key = |p: &Progress| {
        (
            p.step,
            p.epoch,
            p.g_gan.to_bits(),
            p.g_l1.to_bits(),
            p.d_real.to_bits(),
            p.d_fake.to_bits(),
            p.lr.to_bits(),
        )
    };
    let resumed: Vec<_> = first.iter().chain(&second).map(key).collect();
    assert_eq!(full.iter().map(key).collect::<Vec<_>>(), resumed);
    assert!(full[5].lr < full[3].lr, "the linear decay should have started");
    for file in [GENERATOR, DISCRIMINATOR] {
        assert_same_tensors(&a.0.join(LATEST).join(file), &b.0.join(LATEST).join(file));
    }
    let (sa, sb) =
        (state::load(&a.0.join(LATEST)).unwrap(), state::load(&b.0.join(LATEST)).unwrap());
    assert_eq!(sa.run.step, 6);
    assert_eq!((sa.run.step, sa.run.epoch, sa.run.seed), (sb.run.step, sb.run.epoch, sb.run.seed));
    assert_eq!(sa.optimizer.len(), sb.optimizer.len());
    for (k, t) in &sa.optimizer {
        let (x, y) = (
            t.to_dtype(candle_core::DType::F64).unwrap(),
            sb.optimizer[k].to_dtype(candle_core::DType::F64).unwrap(),
        );
        assert_eq!(
            x.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            y.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            "{k}"
        );
    }
    // The log tells one history: 6 rows, the same losses.
    let log = |d: &Path| -> Vec<String> {
        std::fs::read_to_string(d.join("losses.csv"))
            .unwrap()
            .lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string())
            .collect()
    };
    assert_eq!(log(&a.0), log(&b.0));
    assert_eq!(log(&a.0).len(), 7);
    assert!(
        a.0.join("step_0000004").is_dir()
            && a.0.join("samples/step_0000006.png").is_file()
            && a.0.join("loss_curve.png").is_file()
    );
    assert_tidy(&a.0);
    assert_tidy(&b.0);
}

#[test]
fn cancel_saves_first() {
    let d = TempDir::new("cancel");
    let s = train::train(&config(&d.0, 6), false, &mut |p| p.step < 2).unwrap();
    assert!(s.cancelled);
    assert_eq!(s.steps, 2);
    assert_eq!(state::load(&s.checkpoint_dir).unwrap().run.step, 2);
    assert_tidy(&d.0);
}

#[test]
fn failed_or_interrupted_save_keeps_the_previous_checkpoint() {
    let d = TempDir::new("atomic");
    run(&d.0, 1, false);
    let latest = d.0.join(LATEST);
    let read = |f: &str| std::fs::read(latest.join(f)).unwrap();
    let before: Vec<Vec<u8>> = [GENERATOR, DISCRIMINATOR, STATE].iter().map(|f| read(f)).collect();

    // A save that dies half-way through its second file.
    let files: Vec<FileWriter> = vec![
        (
            GENERATOR,
            Box::new(|p: &Path| {
                std::fs::write(p, b"new generator").map_err(|e| pix2pix::Error::io(p, e))
            }),
        ),
        (
            DISCRIMINATOR,
            Box::new(|p: &Path| {
                std::fs::write(p, b"partial").unwrap();
                Err(pix2pix::Error::io(p, std::io::Error::other("disk full (simulated)")))
            }),
        ),
    ];
    assert!(state::write_folder(&d.0, LATEST, &files).is_err());
    let after: Vec<Vec<u8>> = [GENERATOR, DISCRIMINATOR, STATE].iter().map(|f| read(f)).collect();
    assert!(before == after, "the failed save touched latest/");
    assert_tidy(&d.0);

    // A kill between "move the old folder aside" and "move the new one in": recover() puts the
    // old one back, and a resume continues from it.
    std::fs::rename(&latest, d.0.join(".latest.old-12345")).unwrap();
    std::fs::create_dir(d.0.join(".latest.tmp-12345")).unwrap();
    std::fs::write(d.0.join(".latest.tmp-12345").join(GENERATOR), b"half").unwrap();
    let mut notes = Vec::new();
    state::recover(&d.0, &mut |n| notes.push(n.to_string())).unwrap();
    assert!(notes.iter().any(|n| n.contains("restoring") && n.contains(LATEST)), "{notes:?}");
    assert_tidy(&d.0);
    assert!(
        before == [GENERATOR, DISCRIMINATOR, STATE].iter().map(|f| read(f)).collect::<Vec<_>>()
    );
    let resumed = run(&d.0, 2, true);
    assert_eq!(resumed.len(), 1);
}
