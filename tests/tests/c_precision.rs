//! `p2p_options.precision` through the C API (`tests/c/precision.c`): the shipped model opened
//! in f32 and in bf16 translates the same images. Where the CPU has AVX512_BF16 (read from
//! /proc/cpuinfo here, independently of the library) the bf16 model reports bf16 and its
//! outputs differ from f32's (so bf16 really ran) by little: rounded operands move a trained
//! model's outputs by a fraction of a level on average. The products run on AMX where the
//! system has it and on the AVX512_BF16 kernel with `PIX2PIX_AMX=0`; both must agree. Elsewhere
//! the bf16 model reports f32 and its outputs equal f32's exactly.

mod common;

use std::process::Command;

use common::*;

struct Run {
    /// (max, mean) level differences per size.
    diffs: Vec<(i32, f64)>,
    precision_f32: u32,
    precision_bf16: u32,
    bad: String,
}

fn precision_run(amx: bool) -> Run {
    let dir = scratch(&format!("c-precision-{amx}"));
    let exe = compile("precision.c", &dir);
    let mut cmd = Command::new(exe);
    cmd.arg("-");
    if !amx {
        cmd.env("PIX2PIX_AMX", "0");
    }
    let text = String::from_utf8_lossy(&run(&mut cmd).stdout).into_owned();
    let value = |p: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(p))
            .unwrap_or_else(|| panic!("no `{p}` line in {text}"))
            .trim()
            .to_string()
    };
    let diffs = text
        .lines()
        .filter(|l| l.starts_with("size "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[3].parse().unwrap(), f[5].parse().unwrap())
        })
        .collect();
    Run {
        diffs,
        precision_f32: value("precision_f32 ").parse().unwrap(),
        precision_bf16: value("precision_bf16 ").parse().unwrap(),
        bad: value("bad "),
    }
}

fn cpu_has(flag: &str) -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| {
            c.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == flag))
        })
        .unwrap_or(false)
}

#[test]
fn bf16_within_a_few_levels_of_f32_where_the_cpu_has_it() {
    let bf16 = cpu_has("avx512_bf16");
    let paths: &[bool] = if cpu_has("amx_bf16") { &[true, false] } else { &[false] };
    if !cpu_has("amx_bf16") {
        eprintln!("AMX path skipped: this CPU has no amx_bf16");
    }
    for &amx in paths {
        let r = precision_run(amx);
        assert_eq!(r.precision_f32, 1, "P2P_PRECISION_F32");
        assert!(r.bad.starts_with("P2P_ERR_INVALID_ARGUMENT"), "{}", r.bad);
        assert!(r.bad.contains("options.precision: 9"), "{}", r.bad);
        assert_eq!(r.diffs.len(), 2);
        for (max, mean) in &r.diffs {
            if bf16 {
                assert_eq!(r.precision_bf16, 2, "P2P_PRECISION_BF16");
                assert!(*max > 0, "bf16 output identical to f32: bf16 did not run (amx {amx})");
                assert!(*max <= 3 && *mean <= 0.25, "amx {amx}: max {max} mean {mean}");
            } else {
                assert_eq!(r.precision_bf16, 1, "falls back to P2P_PRECISION_F32");
                assert_eq!((*max, *mean), (0, 0.0), "the f32 fallback differs from f32");
            }
        }
        eprintln!("amx {amx}: {:?}", r.diffs);
    }
    if !bf16 {
        eprintln!("bf16 comparison skipped: this CPU has no avx512_bf16 (f32 fallback checked)");
    }
}
