//! Hostile and careless checkpoints (issue 13, the readers' part): pickle expansion and deep
//! nesting, sizes declared by headers, paths that are not regular files, non-finite weights.
//! Every hostile file is generated here, in a temporary folder, from hand-written pickles; each
//! case asserts the exact error (the file named, the limit said), and the memory cases run the
//! load in a child process under `RLIMIT_AS` and assert that it ends normally.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use candle_core::{DType, Tensor};
use common::*;
use pix2pix::checkpoint::{save_safetensors, ReadLimits};
use pix2pix::{Checkpoint, Model, Options};

// ---------------------------------------------------------------------------------------------
// Hand-written pickles and torch-style zip archives.

/// A pickle under construction: opcodes by their names in `pickletools`.
#[derive(Default, Clone)]
struct Pickle(Vec<u8>);

impl Pickle {
    fn new() -> Self {
        Pickle(vec![0x80, 2]) // PROTO 2, as torch.save writes
    }
    fn op(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn mark(&mut self) -> &mut Self {
        self.op(b"(")
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.op(b"X").op(&(s.len() as u32).to_le_bytes()).op(s.as_bytes())
    }
    fn int(&mut self, i: i64) -> &mut Self {
        if let Ok(i) = i32::try_from(i) {
            self.op(b"J").op(&i.to_le_bytes())
        } else {
            self.op(&[0x8a, 8]).op(&i.to_le_bytes())
        }
    }
    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.op(b"c").op(module.as_bytes()).op(b"\n").op(name.as_bytes()).op(b"\n")
    }
    fn put(&mut self, k: u32) -> &mut Self {
        self.op(b"r").op(&k.to_le_bytes())
    }
    fn get(&mut self, k: u32) -> &mut Self {
        self.op(b"j").op(&k.to_le_bytes())
    }
    fn ints(&mut self, v: &[i64]) -> &mut Self {
        self.mark();
        for &i in v {
            self.int(i);
        }
        self.op(b"t")
    }
    /// `OrderedDict()`, as a state dict starts.
    fn ordered_dict(&mut self) -> &mut Self {
        self.global("collections", "OrderedDict").op(b")R")
    }
    fn stop(&mut self) -> Vec<u8> {
        self.op(b".");
        self.0.clone()
    }
}

/// One tensor of a hand-written `.pth`: `_rebuild_tensor_v2(storage, offset, size, stride, …)`.
struct TensorSpec {
    name: String,
    storage_class: &'static str,
    key: String,
    storage_len: i64,
    offset: i64,
    shape: Vec<i64>,
}

impl TensorSpec {
    fn f32(name: &str, key: &str, shape: &[i64]) -> Self {
        // Wrapping: the overflow cases are for the reader to catch.
        let n = shape.iter().fold(1i64, |a, &d| a.wrapping_mul(d));
        TensorSpec {
            name: name.into(),
            storage_class: "FloatStorage",
            key: key.into(),
            storage_len: n,
            offset: 0,
            shape: shape.to_vec(),
        }
    }
}

fn row_major(shape: &[i64]) -> Vec<i64> {
    let mut stride = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * shape[i + 1];
    }
    stride
}

/// The pickle `torch.save(state_dict)` writes for these tensors (protocol 2).
fn state_dict_pickle(specs: &[TensorSpec]) -> Pickle {
    let mut p = Pickle::new();
    p.ordered_dict().put(0).mark();
    for t in specs {
        p.str(&t.name).global("torch._utils", "_rebuild_tensor_v2").mark();
        p.mark()
            .str("storage")
            .global("torch", t.storage_class)
            .str(&t.key)
            .str("cpu")
            .int(t.storage_len)
            .op(b"tQ");
        p.int(t.offset)
            .ints(&t.shape)
            .ints(&row_major(&t.shape))
            .op(&[0x89])
            .ordered_dict()
            .op(b"tR");
    }
    p.op(b"u");
    p
}

/// A torch-format zip: `archive/data.pkl`, `archive/data/<key>` stored uncompressed.
fn zip_archive(pickle: &[u8], storages: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file("archive/data.pkl", stored).unwrap();
    w.write_all(pickle).unwrap();
    for (key, data) in storages {
        w.start_file(format!("archive/data/{key}"), stored).unwrap();
        w.write_all(data).unwrap();
    }
    w.start_file("archive/version", stored).unwrap();
    w.write_all(b"3\n").unwrap();
    w.finish().unwrap().into_inner()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A `.pth` holding `tensors` (f32, one storage each), as torch.save lays it out.
fn write_pth(path: &Path, tensors: &[(String, Tensor)]) {
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .enumerate()
        .map(|(i, (name, t))| {
            TensorSpec::f32(
                name,
                &i.to_string(),
                &t.dims().iter().map(|&d| d as i64).collect::<Vec<_>>(),
            )
        })
        .collect();
    let data: Vec<(String, Vec<u8>)> = tensors
        .iter()
        .enumerate()
        .map(|(i, (_, t))| {
            (i.to_string(), f32_bytes(&t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        })
        .collect();
    let storages: Vec<(&str, Vec<u8>)> =
        data.iter().map(|(k, d)| (k.as_str(), d.clone())).collect();
    std::fs::write(path, zip_archive(&state_dict_pickle(&specs).stop(), &storages)).unwrap();
}

/// A `.pth` whose pickle is `pickle` (no storages).
fn write_pickle(dir: &Path, name: &str, pickle: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, zip_archive(pickle, &[])).unwrap();
    path
}

fn load_err(path: &Path) -> String {
    match Checkpoint::load(path) {
        Ok(c) => {
            panic!("{}: loaded {} tensors, expected an error", path.display(), c.tensors().len())
        }
        Err(e) => e.to_string(),
    }
}

/// `e` names `path` and says `what`.
#[track_caller]
fn assert_error(e: &str, path: &Path, what: &str) {
    assert!(
        e.starts_with(&format!("{}: ", path.display())),
        "error does not start with the file name: {e}"
    );
    assert!(e.contains(what), "error does not say {what:?}: {e}");
}

fn fixture_tensors() -> Vec<(String, Tensor)> {
    let c = Checkpoint::load(fixture("unet128_ngf8_instance_lsgan").join("generator.safetensors"))
        .unwrap();
    c.tensors().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

// ---------------------------------------------------------------------------------------------
// Child processes under an address-space limit.

const CHILD: &str = "P2P_HOSTILE_CHILD";

/// In the child (`CHILD` set to a path): limits the address space to `limit` bytes, loads the
/// file and prints the outcome. Returns `true` there, so the test body is skipped.
fn run_as_child(limit: u64) -> bool {
    let Ok(path) = std::env::var(CHILD) else {
        return false;
    };
    let rl = libc::rlimit { rlim_cur: limit, rlim_max: limit };
    // SAFETY: setrlimit reads the struct we pass and changes only this (child) process's limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
    match Checkpoint::load(&path) {
        Ok(c) => println!("CHILD-OK {}", c.names().collect::<Vec<_>>().join(",")),
        Err(e) => println!("CHILD-ERR {e}"),
    }
    true
}

/// Runs `test` of this binary in a child process on `path`; returns its stdout, after asserting
/// that it exited normally (no abort, no signal).
fn child(test: &str, path: &Path) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child {test} ended with {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

// ---------------------------------------------------------------------------------------------
// The reader itself: a hand-written archive reads back what was written.

#[test]
fn hand_written_pth_archives_read_back_exactly() {
    let dir = TempDir::new("hostile-roundtrip");
    let tensors = fixture_tensors();
    let path = dir.0.join("handmade.pth");
    write_pth(&path, &tensors);
    let c = Checkpoint::load(&path).unwrap();
    assert_eq!(c.tensors().len(), tensors.len());
    for (name, t) in &tensors {
        let got = c.get(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(got.dims(), t.dims(), "{name}");
        assert_eq!(max_abs(got, t), 0.0, "{name}");
    }

    // Two tensors sharing one storage at different offsets, in the other storage types.
    let values = [1.5f32, -2.0, 3.25, 0.0, 7.0, -0.5];
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "HalfStorage",
            values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
        ),
        (
            "BFloat16Storage",
            values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
        ),
        ("DoubleStorage", values.iter().flat_map(|&v| (v as f64).to_le_bytes()).collect()),
        ("LongStorage", values.iter().flat_map(|&v| (v as i64).to_le_bytes()).collect()),
    ];
    for (class, data) in cases {
        let spec = |name: &str, offset, shape: &[i64]| TensorSpec {
            name: name.into(),
            storage_class: class,
            key: "0".into(),
            storage_len: 6,
            offset,
            shape: shape.to_vec(),
        };
        let p = state_dict_pickle(&[spec("a", 0, &[2]), spec("b", 2, &[2, 2])]).stop();
        let path = dir.0.join(format!("{class}.pth"));
        std::fs::write(&path, zip_archive(&p, &[("0", data)])).unwrap();
        let c = Checkpoint::load(&path).unwrap();
        let want = |v: &[f32]| {
            v.iter()
                .map(|&x| if class == "LongStorage" { x.trunc() } else { x })
                .collect::<Vec<f32>>()
        };
        assert_eq!(c.get("a").unwrap().to_vec1::<f32>().unwrap(), want(&values[..2]), "{class}");
        assert_eq!(
            c.get("b").unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want(&values[2..]),
            "{class}"
        );
    }
}

/// State dicts pickled by CPython's own pickler the way `torch.save` drives it (persistent ids
/// for storages, `_rebuild_tensor_v2` reductions, `_metadata`), with stand-in torch modules:
/// written by `fuzz/make_corpus.py` (`cpython_p2`, `cpython_p4_wrapped`, `cpython_p5_wrapped`).
const CPYTHON_PICKLES: [&str; 3] = [
    // protocol 2
    concat!(
        "800263636f6c6c656374696f6e730a4f726465726564446963740a71002952710128580c0000006c617965722e776569",
        "676874710263746f7263682e5f7574696c730a5f72656275696c645f74656e736f725f76320a71032828580700000073",
        "746f72616765710463746f7263680a466c6f617453746f726167650a7105580100000030710658030000006370757107",
        "4b06747108514b004b024b028671094b024b0186710a8968002952710b74710c52710d580a0000006c617965722e6269",
        "6173710e6803282868046805680668074b0674710f514b044b028571104b018571118968002952711274711352711458",
        "16000000626e2e6e756d5f626174636865735f747261636b6564711568032828680463746f7263680a4c6f6e6753746f",
        "726167650a7116580100000031711768074b01747118514b0029298968002952711974711a52711b757d711c58090000",
        "005f6d65746164617461711d68002952711e285800000000711f7d7120580700000076657273696f6e71214b01735805",
        "0000006c6179657271227d712368214b01737573622e",
    ),
    // protocol 4 (the state dict under `state_dict`, next to other values)
    concat!(
        "800495bb020000000000007d94288c0565706f6368944b038c0a73746174655f64696374948c0b636f6c6c656374696f",
        "6e73948c0b4f72646572656444696374949394295294288c0c6c617965722e776569676874948c0c746f7263682e5f75",
        "74696c73948c125f72656275696c645f74656e736f725f763294939428288c0773746f72616765948c05746f72636894",
        "8c0c466c6f617453746f726167659493948c0130948c03637075944b067494514b004b024b0286944b024b0186948968",
        "05295294749452948c0a6c617965722e6269617394680a2828680b680e680f68104b067494514b044b0285944b018594",
        "896805295294749452948c16626e2e6e756d5f626174636865735f747261636b656494680a2828680b680c8c0b4c6f6e",
        "6753746f726167659493948c01319468104b017494514b00292989680529529474945294757d948c095f6d6574616461",
        "7461946805295294288c00947d948c0776657273696f6e944b01738c056c61796572947d94682b4b01737573628c036f",
        "7074945d9428473ff80000000000004e88582c0100007878787878787878787878787878787878787878787878787878",
        "787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878",
        "787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878",
        "787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878",
        "787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878",
        "787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878",
        "787878787878787878787878787878787878787878787878787878787878787878789465752e",
    ),
    // protocol 5 (the state dict under `state_dict`, next to other values)
    concat!(
        "800595bb020000000000007d94288c0565706f6368944b038c0a73746174655f64696374948c0b636f6c6c656374696f",
        "6e73948c0b4f72646572656444696374949394295294288c0c6c617965722e776569676874948c0c746f7263682e5f75",
        "74696c73948c125f72656275696c645f74656e736f725f763294939428288c0773746f72616765948c05746f72636894",
        "8c0c466c6f617453746f726167659493948c0130948c03637075944b067494514b004b024b0286944b024b0186948968",
        "05295294749452948c0a6c617965722e6269617394680a2828680b680e680f68104b067494514b044b0285944b018594",
        "896805295294749452948c16626e2e6e756d5f626174636865735f747261636b656494680a2828680b680c8c0b4c6f6e",
        "6753746f726167659493948c01319468104b017494514b00292989680529529474945294757d948c095f6d6574616461",
        "7461946805295294288c00947d948c0776657273696f6e944b01738c056c61796572947d94682b4b01737573628c036f",
        "7074945d9428473ff80000000000004e88582c0100007878787878787878787878787878787878787878787878787878",
        "787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878",
        "787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878",
        "787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878",
        "787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878",
        "787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878",
        "787878787878787878787878787878787878787878787878787878787878787878789465752e",
    ),
];

#[test]
fn pickles_from_cpython_protocols_2_to_5_read_back() {
    let dir = TempDir::new("hostile-cpython");
    let values = [0.5f32, -1.0, 2.0, 0.25, 3.0, -0.75];
    let storages = [("0", f32_bytes(&values)), ("1", 7i64.to_le_bytes().to_vec())];
    for (i, hex) in CPYTHON_PICKLES.iter().enumerate() {
        let pickle: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|j| u8::from_str_radix(&hex[j..j + 2], 16).unwrap())
            .collect();
        let path = dir.0.join(format!("cpython-{i}.pth"));
        std::fs::write(&path, zip_archive(&pickle, &storages)).unwrap();
        let c = Checkpoint::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.names().collect::<Vec<_>>(),
            ["bn.num_batches_tracked", "layer.bias", "layer.weight"]
        );
        let w = c.get("layer.weight").unwrap();
        assert_eq!(w.dims(), [2, 2]);
        assert_eq!(w.flatten_all().unwrap().to_vec1::<f32>().unwrap(), values[..4]);
        assert_eq!(c.get("layer.bias").unwrap().to_vec1::<f32>().unwrap(), values[4..]);
        assert_eq!(c.get("bn.num_batches_tracked").unwrap().to_scalar::<f32>().unwrap(), 7.0);
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Pickle expansion.

/// A state dict with one real tensor and, next to it, a value built by memo references: level
/// i is a list of 1000 references to level i − 1. A reader that copies memoised objects builds
/// 1000^4 objects; shared references (as in Python) keep it at 4000 items.
fn expansion_bomb(dir: &Path) -> PathBuf {
    let mut p = state_dict_pickle(&[TensorSpec::f32("w", "0", &[2])]);
    p.0.pop(); // reopen the dict: drop SETITEMS, add one more key
    p.str("junk").op(b"N").put(1).op(b"0");
    for level in 2..6u32 {
        p.op(b"]").mark();
        for _ in 0..1000 {
            p.get(level - 1);
        }
        p.op(b"e").put(level).op(b"0");
    }
    p.get(5).op(b"u");
    let path = dir.join("expansion.pth");
    std::fs::write(&path, zip_archive(&p.stop(), &[("0", f32_bytes(&[1.0, 2.0]))])).unwrap();
    path
}

#[test]
fn memo_references_share_instead_of_copying() {
    if run_as_child(1 << 30) {
        return;
    }
    let dir = TempDir::new("hostile-expansion");
    let path = expansion_bomb(&dir.0);
    assert!(std::fs::metadata(&path).unwrap().len() < 30_000);
    // In a child under a 1 GiB address-space limit: loads the tensor, ignores the junk.
    let out = child("memo_references_share_instead_of_copying", &path);
    assert!(out.contains("CHILD-OK w\n"), "{out}");
    let c = Checkpoint::load(&path).unwrap();
    assert_eq!(c.get("w").unwrap().to_vec1::<f32>().unwrap(), [1.0, 2.0]);
}

#[test]
fn each_pickle_limit_is_an_error_naming_the_file_and_the_limit() {
    let dir = TempDir::new("hostile-limits");
    // Objects: a million and one Nones, each popped again.
    let mut p = Pickle::new();
    for _ in 0..1_000_001 {
        p.op(b"N0");
    }
    let path = write_pickle(&dir.0, "objects.pth", &p.stop());
    assert_error(&load_err(&path), &path, "more than 1000000 objects");

    // Items: one list, 4001 APPENDS of 1000 references each.
    let mut p = Pickle::new();
    p.op(b"N").put(0).op(b"0]");
    for _ in 0..4001 {
        p.mark();
        for _ in 0..1000 {
            p.op(b"h\x00");
        }
        p.op(b"e");
    }
    let path = write_pickle(&dir.0, "items.pth", &p.stop());
    assert_error(&load_err(&path), &path, "more than 4000000 container items");

    // Stack: a million and one references.
    let mut p = Pickle::new();
    p.op(b"N").put(0);
    for _ in 0..1_000_000 {
        p.op(b"h\x00");
    }
    let path = write_pickle(&dir.0, "stack.pth", &p.stop());
    assert_error(&load_err(&path), &path, "stack deeper than 1000000 entries");

    // Memo: a million and one distinct keys.
    let mut p = Pickle::new();
    p.op(b"N");
    for k in 0..1_000_001 {
        p.put(k);
    }
    let path = write_pickle(&dir.0, "memo.pth", &p.stop());
    assert_error(&load_err(&path), &path, "more than 1000000 memo entries");

    // Marks: a million and one.
    let path = write_pickle(&dir.0, "marks.pth", &Pickle::new().op(&vec![b'('; 1_000_001]).stop());
    assert_error(&load_err(&path), &path, "more than 1000000 nested MARKs");

    // Pickle size, in a file of its own limits.
    let limits = ReadLimits {
        pickle: pix2pix::checkpoint::PickleLimits { max_bytes: 1000, ..Default::default() },
        ..Default::default()
    };
    let path = write_pickle(&dir.0, "size.pth", &Pickle::new().op(&vec![b'N'; 2000]).stop());
    let e = Checkpoint::load_with_limits(&path, &limits).err().unwrap().to_string();
    assert_error(&e, &path, "more than the limit of 1000 bytes");

    // Memo references to undefined entries, truncation, unknown opcodes: errors, with the offset.
    for (name, body, what) in [
        ("undefined.pth", &b"j\x07\x00\x00\x00"[..], "memo entry 7 is not defined"),
        ("truncated.pth", &b"X\xff\xff\xff\x00ab"[..], "truncated"),
        ("opcode.pth", &b"Nz"[..], "unsupported opcode (opcode 0x7a at byte 3)"),
        ("underflow.pth", &b"t"[..], "no MARK"),
    ] {
        let path = write_pickle(&dir.0, name, &Pickle::new().op(body).stop());
        assert_error(&load_err(&path), &path, what);
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Deep nesting: a million levels, on a test thread's 2 MiB stack, end in an error.

#[test]
fn a_million_nested_containers_is_an_error_not_a_stack_overflow() {
    let dir = TempDir::new("hostile-nesting");
    const N: usize = 1_000_000;
    let limit = "nesting deeper than 64 levels";

    // Lists: a million empty lists, each appended to the one below.
    let mut p = Pickle::new();
    p.op(&vec![b']'; N - 1]).op(&vec![b'a'; N - 2]);
    let path = write_pickle(&dir.0, "lists.pth", &p.stop());
    assert_error(&load_err(&path), &path, limit);

    // Tuples: TUPLE1 around TUPLE1 around …
    let path =
        write_pickle(&dir.0, "tuples.pth", &Pickle::new().op(b"N").op(&vec![0x85; N]).stop());
    assert_error(&load_err(&path), &path, limit);

    // Lists from MARK … LIST, the way protocol 0 nests.
    let path = write_pickle(
        &dir.0,
        "marks.pth",
        &Pickle::new().op(&vec![b'('; N / 2]).op(&vec![b'l'; N / 2]).stop(),
    );
    assert_error(&load_err(&path), &path, limit);

    // Dicts: each level {0: previous level}, through the memo.
    let mut p = Pickle::new();
    p.op(b"}").put(0).op(b"0");
    for i in 1..N as u32 {
        p.op(b"}K\x00").get(i - 1).op(b"s").put(i).op(b"0");
    }
    p.get(N as u32 - 1);
    let path = write_pickle(&dir.0, "dicts.pth", &p.stop());
    assert_error(&load_err(&path), &path, limit);

    // Calls: REDUCE of REDUCE of …, the shape of nested tensor rebuilds.
    let mut p = Pickle::new();
    p.op(b"N").put(0).op(b"0");
    for i in 1..N as u32 / 4 {
        p.global("builtins", "f").get(i - 1).op(&[0x85]).op(b"R").put(i).op(b"0");
    }
    p.get(N as u32 / 4 - 1);
    let path = write_pickle(&dir.0, "calls.pth", &p.stop());
    assert_error(&load_err(&path), &path, limit);

    // 64 levels are fine (a state dict needs 5): the file is refused only for holding no tensors.
    let mut p = Pickle::new();
    p.op(b"N").op(&[0x85; 63]);
    let path = write_pickle(&dir.0, "sixty-four.pth", &p.stop());
    assert_error(&load_err(&path), &path, "the pickle holds no dict of tensors");
}

// ---------------------------------------------------------------------------------------------
// 3. Sizes declared by a header are checked before anything is allocated.

/// A safetensors file with one f32 tensor `w` of `shape` whose declared data is `data_len` bytes,
/// made sparse by `set_len` (no disk space used).
fn sparse_safetensors(path: &Path, shape: &[u64], data_len: u64) {
    let n: u64 = shape.iter().product::<u64>() * 4;
    let header = format!(r#"{{"w":{{"dtype":"F32","shape":{shape:?},"data_offsets":[0,{n}]}}}}"#);
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    f.write_all(header.as_bytes()).unwrap();
    f.set_len(8 + header.len() as u64 + data_len).unwrap();
}

#[test]
fn declared_sizes_are_checked_against_the_file_and_the_memory_limit() {
    let dir = TempDir::new("hostile-sizes");
    let limits = ReadLimits { max_tensor_bytes: 1 << 30, ..Default::default() };
    let load = |p: &Path| {
        Checkpoint::load_with_limits(p, &limits)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("{} loaded", p.display()))
    };

    // A sparse 30 GB tensor that the file does hold: refused for the memory limit, at once.
    let path = dir.0.join("sparse-30GB.safetensors");
    sparse_safetensors(&path, &[7_500_000_000], 30_000_000_000);
    let t = Instant::now();
    assert_error(
        &load(&path),
        &path,
        "the tensors need 30000000000 bytes as f32, more than the limit of 1073741824 bytes",
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // The same header in a small file: the data does not fit.
    let path = dir.0.join("short.safetensors");
    sparse_safetensors(&path, &[7_500_000_000], 4096);
    assert_error(
        &load(&path),
        &path,
        "the header describes 30000000000 data bytes, the file holds 4096",
    );

    // Shapes whose size overflows, and overlapping byte ranges: invalid headers.
    let path = dir.0.join("overflow.safetensors");
    let header = r#"{"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}"#;
    std::fs::write(
        &path,
        [&(header.len() as u64).to_le_bytes()[..], header.as_bytes(), &[0; 16]].concat(),
    )
    .unwrap();
    assert_error(&load(&path), &path, "not a valid safetensors file");
    let path = dir.0.join("overlap.safetensors");
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    std::fs::write(
        &path,
        [&(header.len() as u64).to_le_bytes()[..], header.as_bytes(), &[0; 12]].concat(),
    )
    .unwrap();
    assert_error(&load(&path), &path, "not a valid safetensors file");

    // .pth: a storage that claims more elements than its zip entry holds.
    let path = dir.0.join("storage.pth");
    let spec = TensorSpec { storage_len: 1_000_000_000, ..TensorSpec::f32("w", "0", &[1000]) };
    std::fs::write(&path, zip_archive(&state_dict_pickle(&[spec]).stop(), &[("0", vec![0; 64])]))
        .unwrap();
    assert_error(&load(&path), &path, "tensor `w`: its storage `archive/data/0` holds 64 bytes but the pickle declares 1000000000 elements of 4 bytes");

    // .pth: a tensor reaching past the end of its storage.
    let path = dir.0.join("extent.pth");
    let spec = TensorSpec { storage_len: 4, offset: 2, ..TensorSpec::f32("w", "0", &[4]) };
    std::fs::write(&path, zip_archive(&state_dict_pickle(&[spec]).stop(), &[("0", vec![0; 16])]))
        .unwrap();
    assert_error(
        &load(&path),
        &path,
        "tensor `w`: elements 2..2+4 lie outside its storage of 4 elements",
    );

    // .pth: a tensor of 2^40 elements: over the memory limit before the storage is looked at.
    let path = dir.0.join("huge.pth");
    let spec = TensorSpec::f32("w", "0", &[1 << 20, 1 << 20]);
    std::fs::write(&path, zip_archive(&state_dict_pickle(&[spec]).stop(), &[("0", vec![0; 16])]))
        .unwrap();
    assert_error(
        &load(&path),
        &path,
        "the tensors need 4398046511104 bytes as f32, more than the limit",
    );

    // .pth: a storage missing from the archive, and a shape that overflows.
    let path = dir.0.join("missing.pth");
    std::fs::write(
        &path,
        zip_archive(&state_dict_pickle(&[TensorSpec::f32("w", "7", &[2])]).stop(), &[]),
    )
    .unwrap();
    assert_error(&load(&path), &path, "tensor `w`: its storage `archive/data/7` cannot be read");
    let path = dir.0.join("overflow.pth");
    let spec = TensorSpec::f32("w", "0", &[1 << 62, 1 << 62]);
    std::fs::write(&path, zip_archive(&state_dict_pickle(&[spec]).stop(), &[])).unwrap();
    assert_error(&load(&path), &path, "overflows");
}

/// Under an address-space limit of 1 GiB, a (sparse) 2 GiB tensor within the default memory
/// limit fails to allocate: an error naming the file and the tensor, and the child exits
/// normally.
#[test]
fn allocation_failure_under_rlimit_as_is_an_error() {
    if run_as_child(1 << 30) {
        return;
    }
    let dir = TempDir::new("hostile-rlimit");
    let path = dir.0.join("sparse-2GiB.safetensors");
    sparse_safetensors(&path, &[1 << 29], 1 << 31);
    if ReadLimits::default().max_tensor_bytes < 1 << 31 {
        println!("skipped: this machine's default memory limit is below 2 GiB");
        return;
    }
    let out = child("allocation_failure_under_rlimit_as_is_an_error", &path);
    let want = format!("CHILD-ERR {}: tensor `w`: out of memory: cannot allocate 2147483648 bytes for shape [536870912]", path.display());
    assert!(out.contains(&want), "{out}");
}

// ---------------------------------------------------------------------------------------------
// 4. Paths that are not regular files fail at once, with the reason.

#[test]
fn fifos_devices_directories_and_symlink_loops_are_refused_at_once() {
    let dir = TempDir::new("hostile-paths");
    let fifo = dir.0.join("model.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let a = dir.0.join("loop-a");
    let b = dir.0.join("loop-b");
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    let link_to_fifo = dir.0.join("link-to-fifo.pth");
    std::os::unix::fs::symlink(&fifo, &link_to_fifo).unwrap();

    let cases = [
        (fifo.clone(), "is a FIFO (named pipe), not a regular file"),
        (link_to_fifo, "is a FIFO (named pipe), not a regular file"),
        (dir.0.clone(), "is a directory, not a checkpoint file"),
        (PathBuf::from("/dev/zero"), "is a character device, not a regular file"),
        (a, "is a symbolic link loop (too many levels of symbolic links)"),
    ];
    for (path, why) in cases {
        // In a thread, so that a blocking open fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send((
                Checkpoint::load(&p).err().map(|e| e.to_string()),
                Model::open(p.as_path(), Options::default()).err().map(|e| e.to_string()),
            ));
        });
        let (load, open) = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{} blocked", path.display()));
        let want = format!("{}: {why}", path.display());
        assert_eq!(load.as_deref(), Some(want.as_str()));
        assert_eq!(open.as_deref(), Some(want.as_str()));
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Non-finite weights.

#[test]
fn non_finite_weights_are_errors_naming_the_tensor() {
    let dir = TempDir::new("hostile-nonfinite");
    let tensors = fixture_tensors();
    let with = |name: &str, index: usize, value: f32| -> Vec<(String, Tensor)> {
        tensors
            .iter()
            .map(|(k, t)| {
                if k != name {
                    return (k.clone(), t.clone());
                }
                let mut v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                v[index] = value;
                (k.clone(), Tensor::from_vec(v, t.dims(), t.device()).unwrap())
            })
            .collect()
    };
    let weight = "model.model.0.weight";
    let bias = "model.model.1.model.1.bias";
    assert!(tensors.iter().any(|(k, _)| k == bias), "fixture lacks {bias}");

    // A NaN weight in safetensors (f32 and bf16) and an infinite bias in a .pth.
    let nan = with(weight, 5, f32::NAN);
    for dtype in [DType::F32, DType::BF16] {
        let path = dir.0.join(format!("nan-{dtype:?}.safetensors"));
        save_safetensors(&path, &nan.iter().cloned().collect(), dtype).unwrap();
        assert_error(
            &load_err(&path),
            &path,
            &format!("tensor `{weight}`: holds a non-finite value (NaN) at element 5"),
        );
    }
    let path = dir.0.join("inf.pth");
    write_pth(&path, &with(bias, 0, f32::INFINITY));
    assert_error(
        &load_err(&path),
        &path,
        &format!("tensor `{bias}`: holds a non-finite value (inf) at element 0"),
    );
    let e = Model::open(path.as_path(), Options::default()).err().unwrap().to_string();
    assert_error(&e, &path, &format!("tensor `{bias}`"));

    // An f64 value beyond f32's range is as unusable.
    let path = dir.0.join("f64.pth");
    let p = state_dict_pickle(&[TensorSpec {
        storage_class: "DoubleStorage",
        ..TensorSpec::f32("w", "0", &[2])
    }])
    .stop();
    std::fs::write(
        &path,
        zip_archive(&p, &[("0", [1.0f64, 1e300].iter().flat_map(|v| v.to_le_bytes()).collect())]),
    )
    .unwrap();
    assert_error(
        &load_err(&path),
        &path,
        "tensor `w`: holds a non-finite value (inf) at element 1",
    );
}
