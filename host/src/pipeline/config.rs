//! The pipeline TOML: parsed with exact positions, validated, and resolved into a
//! [`Pipeline`] before any plugin or image is touched.
//!
//! Relative paths (`input.paths`, `output.dir`, `model.path`) resolve against the folder of
//! the TOML file, not the current directory, so a config works from wherever it is run.
//!
//! Errors read `FILE:LINE:COLUMN: [table], key `k`: what is wrong`. Unknown keys, unknown ops
//! and unknown values list the valid ones; keys that belong to another op say which keys
//! their op takes.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde::Deserialize;
use toml::Spanned;

use crate::batch::naming::NameTemplate;
pub use crate::batch::steps::{ConcatWith, Filter, FlipDirection, Half, Side};
use crate::settings::ByName;
use pix2pix_ffi::{NormStats, Precision, SizePolicy, DEFAULT_TILE_OVERLAP};

// ---- The file as written ----------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    workers: Option<Spanned<usize>>,
    batch: Option<Spanned<usize>>,
    #[serde(default)]
    on_error: OnError,
    input: InputSection,
    output: OutputSection,
    #[serde(default, rename = "model")]
    models: Vec<Spanned<ModelSection>>,
    #[serde(default, rename = "step")]
    steps: Vec<Spanned<StepSection>>,
}

#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Report the failure and go on with the other images.
    #[default]
    Continue,
    /// Start no new image after the first failure.
    Stop,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSection {
    paths: Spanned<Vec<String>>,
    #[serde(default)]
    recursive: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputSection {
    dir: String,
    name: Option<Spanned<String>>,
    #[serde(default)]
    overwrite: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSection {
    name: Spanned<String>,
    path: Option<String>,
    #[serde(default)]
    norm_stats: ByName<NormStats>,
    /// Threads inside one translation; 0 = all cores.
    #[serde(default)]
    threads: u32,
    /// Memory one translation may take, in MiB; 0 = the plugin's default.
    #[serde(default)]
    memory_budget_mb: u64,
    #[serde(default)]
    precision: ByName<Precision>,
}

/// One `[[step]]`: every op's keys, so positions stay exact; [`OPS`] says which op takes which.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepSection {
    op: Spanned<String>,
    half: Option<Spanned<Half>>,
    x: Option<Spanned<u32>>,
    y: Option<Spanned<u32>>,
    width: Option<Spanned<u32>>,
    height: Option<Spanned<u32>>,
    filter: Option<Spanned<Filter>>,
    direction: Option<Spanned<FlipDirection>>,
    model: Option<Spanned<String>>,
    size_policy: Option<Spanned<ByName<SizePolicy>>>,
    tile_overlap: Option<Spanned<u32>>,
    norm_stats: Option<Spanned<ByName<NormStats>>>,
    with: Option<Spanned<ConcatWith>>,
    side: Option<Spanned<Side>>,
}

/// The largest side a `resize` step makes: 65535 (what the image formats written hold).
pub const MAX_RESIZE_SIDE: u32 = 65_535;
/// The most pixels a `resize` step makes: 2^28 (1 GiB as 8-bit RGBA), the plugin's limit for a
/// translated image too.
pub const MAX_RESIZE_PIXELS: u64 = 1 << 28;

/// The ops and the keys each takes (besides `op`).
pub const OPS: &[(&str, &[&str])] = &[
    ("split", &["half"]),
    ("crop", &["x", "y", "width", "height"]),
    ("resize", &["width", "height", "filter"]),
    ("flip", &["direction"]),
    ("translate", &["model", "size_policy", "tile_overlap", "norm_stats"]),
    ("concat", &["with", "side"]),
];

// ---- The validated pipeline -------------------------------------------------------------

#[derive(Debug)]
pub struct Pipeline {
    /// The folder relative paths resolve against (the TOML file's).
    pub base: PathBuf,
    pub workers: usize,
    /// Images a worker takes at once; same-size ones share each translate step's forward pass.
    pub batch: usize,
    pub on_error: OnError,
    pub inputs: Vec<String>,
    pub recursive: bool,
    pub out_dir: PathBuf,
    pub name: NameTemplate,
    pub overwrite: bool,
    pub models: Vec<ModelDecl>,
    pub steps: Vec<StepSpec>,
}

#[derive(Debug, Clone)]
pub struct ModelDecl {
    pub name: String,
    /// None: the plugin's shipped default model.
    pub path: Option<PathBuf>,
    pub norm_stats: NormStats,
    pub threads: u32,
    /// Memory one translation may take, in MiB; 0 = the plugin's default.
    pub memory_budget_mb: u64,
    /// Arithmetic of the convolutions (bf16 where the CPU has AVX512_BF16).
    pub precision: Precision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TranslateSpec {
    /// Index into [`Pipeline::models`].
    pub model: usize,
    pub size_policy: SizePolicy,
    pub tile_overlap: u32,
    pub norm_stats: NormStats,
}

#[derive(Debug, Clone)]
pub enum StepSpec {
    Split(Half),
    Crop { x: u32, y: u32, width: u32, height: u32 },
    Resize { width: Option<u32>, height: Option<u32>, filter: Filter },
    Flip(FlipDirection),
    Translate(TranslateSpec),
    Concat { with: ConcatWith, side: Side },
}

pub const DEFAULT_NAME: &str = "{stem}.png";

/// The most images one `batch` may hold (the plugin's limit per call).
pub const MAX_BATCH: usize = 1024;

pub fn load(path: &Path) -> Result<Pipeline> {
    let src = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read pipeline {}", path.display()))?;
    let base = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    parse(&src, &path.display().to_string(), &base)
}

pub fn parse(src: &str, file: &str, base: &Path) -> Result<Pipeline> {
    let at = |span: Range<usize>, msg: String| locate(src, file, span, &msg);
    let f: File = toml::from_str(src)
        .map_err(|e| locate(src, file, e.span().unwrap_or(0..0), e.message()))?;

    let workers = match &f.workers {
        Some(w) if *w.get_ref() == 0 => return Err(at(w.span(), "must be at least 1".into())),
        Some(w) => *w.get_ref(),
        None => 1,
    };
    let batch = match &f.batch {
        Some(b) if !(1..=MAX_BATCH).contains(b.get_ref()) => {
            return Err(at(b.span(), format!("must be 1 to {MAX_BATCH}")))
        }
        Some(b) => *b.get_ref(),
        None => 1,
    };
    if f.input.paths.get_ref().is_empty() {
        return Err(at(f.input.paths.span(), "no input paths".into()));
    }

    let name = match &f.output.name {
        Some(n) => NameTemplate::parse(n.get_ref()).map_err(|e| at(n.span(), e))?,
        None => NameTemplate::parse(DEFAULT_NAME).map_err(|e| anyhow!(e))?,
    };
    if let Err(e) = name.check_format() {
        let span = f.output.name.as_ref().map(|n| n.span()).unwrap_or(0..0);
        return Err(at(span, e));
    }

    let mut models = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for m in &f.models {
        let m = m.get_ref();
        let n = m.name.get_ref().trim();
        if n.is_empty() {
            return Err(at(m.name.span(), "model name is empty".into()));
        }
        if index.insert(n.to_string(), models.len()).is_some() {
            return Err(at(m.name.span(), format!("model {n:?} is declared twice")));
        }
        models.push(ModelDecl {
            name: n.to_string(),
            path: m.path.as_ref().map(|p| base.join(p)),
            norm_stats: m.norm_stats.0,
            threads: m.threads,
            memory_budget_mb: m.memory_budget_mb,
            precision: m.precision.0,
        });
    }

    let mut steps = Vec::new();
    for s in &f.steps {
        steps.push(step(s.get_ref(), &mut models, &index, &at)?);
    }

    Ok(Pipeline {
        base: base.to_path_buf(),
        workers,
        batch,
        on_error: f.on_error,
        inputs: f.input.paths.into_inner(),
        recursive: f.input.recursive,
        out_dir: base.join(&f.output.dir),
        name,
        overwrite: f.output.overwrite,
        models,
        steps,
    })
}

fn step(
    s: &StepSection,
    models: &mut Vec<ModelDecl>,
    index: &HashMap<String, usize>,
    at: &impl Fn(Range<usize>, String) -> anyhow::Error,
) -> Result<StepSpec> {
    let op = s.op.get_ref().as_str();
    let Some((_, keys)) = OPS.iter().find(|(name, _)| *name == op) else {
        let valid: Vec<&str> = OPS.iter().map(|(n, _)| *n).collect();
        return Err(at(s.op.span(), format!("unknown op {op:?}; valid ops: {}", valid.join(", "))));
    };
    let given: [(&str, Option<Range<usize>>); 13] = [
        ("half", s.half.as_ref().map(Spanned::span)),
        ("x", s.x.as_ref().map(Spanned::span)),
        ("y", s.y.as_ref().map(Spanned::span)),
        ("width", s.width.as_ref().map(Spanned::span)),
        ("height", s.height.as_ref().map(Spanned::span)),
        ("filter", s.filter.as_ref().map(Spanned::span)),
        ("direction", s.direction.as_ref().map(Spanned::span)),
        ("model", s.model.as_ref().map(Spanned::span)),
        ("size_policy", s.size_policy.as_ref().map(Spanned::span)),
        ("tile_overlap", s.tile_overlap.as_ref().map(Spanned::span)),
        ("norm_stats", s.norm_stats.as_ref().map(Spanned::span)),
        ("with", s.with.as_ref().map(Spanned::span)),
        ("side", s.side.as_ref().map(Spanned::span)),
    ];
    for (key, span) in given {
        if let Some(span) = span {
            if !keys.contains(&key) {
                return Err(at(
                    span,
                    format!(
                        "key `{key}` does not apply to op {op:?}; its keys: {}",
                        keys.join(", ")
                    ),
                ));
            }
        }
    }
    let val = |v: &Option<Spanned<u32>>| v.as_ref().map(|v| *v.get_ref());
    let positive = |v: &Option<Spanned<u32>>, what: &str| -> Result<Option<u32>> {
        match v {
            Some(v) if *v.get_ref() == 0 => Err(at(v.span(), format!("{what} must be positive"))),
            _ => Ok(val(v)),
        }
    };
    Ok(match op {
        "split" => StepSpec::Split(
            *s.half
                .as_ref()
                .ok_or_else(|| {
                    at(s.op.span(), "split needs `half` (\"left\" or \"right\")".into())
                })?
                .get_ref(),
        ),
        "crop" => {
            let (width, height) = (positive(&s.width, "width")?, positive(&s.height, "height")?);
            let (Some(width), Some(height)) = (width, height) else {
                return Err(at(
                    s.op.span(),
                    "crop needs `width` and `height` (and optionally `x`, `y`, default 0)".into(),
                ));
            };
            StepSpec::Crop { x: val(&s.x).unwrap_or(0), y: val(&s.y).unwrap_or(0), width, height }
        }
        "resize" => {
            let (width, height) = (positive(&s.width, "width")?, positive(&s.height, "height")?);
            for (v, key) in [(&s.width, "width"), (&s.height, "height")] {
                if let Some(v) = v.as_ref().filter(|v| *v.get_ref() > MAX_RESIZE_SIDE) {
                    return Err(at(
                        v.span(),
                        format!("{key} {} exceeds {MAX_RESIZE_SIDE} (the largest side a resize step makes)", v.get_ref()),
                    ));
                }
            }
            if let (Some(w), Some(h)) = (width, height) {
                if u64::from(w) * u64::from(h) > MAX_RESIZE_PIXELS {
                    return Err(at(
                        s.width.as_ref().map(Spanned::span).unwrap_or(0..0),
                        format!("width × height = {w}x{h} exceeds {MAX_RESIZE_PIXELS} pixels (the limit of a resize step)"),
                    ));
                }
            }
            if width.is_none() && height.is_none() {
                return Err(at(
                    s.op.span(),
                    "resize needs `width` or `height` (one alone keeps the aspect ratio)".into(),
                ));
            }
            StepSpec::Resize {
                width,
                height,
                filter: s.filter.as_ref().map(|f| *f.get_ref()).unwrap_or_default(),
            }
        }
        "flip" => StepSpec::Flip(s.direction.as_ref().map(|d| *d.get_ref()).unwrap_or_default()),
        "translate" => {
            let model = match &s.model {
                Some(m) => *index.get(m.get_ref().as_str()).ok_or_else(|| {
                    let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
                    let known = if names.is_empty() {
                        "no [[model]] is declared".to_string()
                    } else {
                        format!("declared: {}", names.join(", "))
                    };
                    at(m.span(), format!("unknown model {:?} ({known})", m.get_ref()))
                })?,
                // One declared model is the obvious one; none means the shipped default.
                None => match models.len() {
                    1 => 0,
                    0 => {
                        models.push(ModelDecl {
                            name: "default".into(),
                            path: None,
                            norm_stats: NormStats::default(),
                            threads: 0,
                            memory_budget_mb: 0,
                            precision: Precision::F32,
                        });
                        0
                    }
                    _ => {
                        return Err(at(
                            s.op.span(),
                            "translate needs `model` when several [[model]] are declared".into(),
                        ))
                    }
                },
            };
            let size_policy = s.size_policy.as_ref().map(|p| p.get_ref().0).unwrap_or_default();
            // The overlap only matters to tiles; normalising it keeps one model instance per
            // real difference.
            let tile_overlap = match size_policy {
                SizePolicy::Tile => val(&s.tile_overlap).unwrap_or(DEFAULT_TILE_OVERLAP),
                _ => DEFAULT_TILE_OVERLAP,
            };
            let norm_stats =
                s.norm_stats.as_ref().map(|n| n.get_ref().0).unwrap_or(models[model].norm_stats);
            StepSpec::Translate(TranslateSpec { model, size_policy, tile_overlap, norm_stats })
        }
        _ => StepSpec::Concat {
            with: s.with.as_ref().map(|w| *w.get_ref()).unwrap_or_default(),
            side: s.side.as_ref().map(|w| *w.get_ref()).unwrap_or_default(),
        },
    })
}

/// `FILE:LINE:COL: [table], key `k`: msg` for the byte offset `span.start` of `src`.
fn locate(src: &str, file: &str, span: Range<usize>, msg: &str) -> anyhow::Error {
    let start = span.start.min(src.len());
    let before = &src[..start];
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = src[line_start..start].chars().count() + 1;
    let line = src[line_start..].lines().next().unwrap_or("");
    let mut place = Vec::new();
    if let Some(table) = enclosing_table(&src[..line_start], line) {
        place.push(table);
    }
    let trimmed = line.trim_start();
    if !trimmed.starts_with('[') {
        if let Some((key, _)) = line.split_once('=') {
            let key = key.trim();
            if !key.is_empty() {
                place.push(format!("key `{key}`"));
            }
        }
    }
    let msg = crate::plugin::one_line(msg);
    if place.is_empty() {
        anyhow!("{file}:{line_no}:{col}: {msg}")
    } else {
        anyhow!("{file}:{line_no}:{col}: {}: {msg}", place.join(", "))
    }
}

/// The table a line belongs to, as `[output]` or `[[step]] #2`; the line itself when it is a
/// header.
fn enclosing_table(before: &str, line: &str) -> Option<String> {
    let header = |l: &str| -> Option<String> {
        let l = l.trim();
        l.starts_with('[').then(|| l.split('#').next().unwrap_or(l).trim().to_string())
    };
    let (h, prior) = match header(line) {
        Some(h) => (h, before),
        None => {
            let mut lines = before.lines().rev();
            let h = lines.by_ref().find_map(header)?;
            let idx = before.rfind(&h).unwrap_or(0);
            (h, &before[..idx])
        }
    };
    if h.starts_with("[[") {
        let n = prior.lines().filter(|l| header(l).as_deref() == Some(h.as_str())).count() + 1;
        Some(format!("{h} #{n}"))
    } else {
        Some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"workers = 2
on_error = "continue"

[input]
paths = ["labels/", "more/*.png"]
recursive = true

[output]
dir = "out"
name = "{stem}_{model}.png"
overwrite = false

[[model]]
name = "facades"
path = "models/facades.safetensors"
norm_stats = "batch"

[[step]]
op = "split"
half = "right"

[[step]]
op = "translate"
model = "facades"
size_policy = "tile"
tile_overlap = 32

[[step]]
op = "resize"
width = 512
height = 512
"#;

    fn err(src: &str) -> String {
        format!("{:#}", parse(src, "p.toml", Path::new("/base")).unwrap_err())
    }

    #[test]
    fn parses_the_documented_example() {
        let p = parse(EXAMPLE, "p.toml", Path::new("/base")).unwrap();
        assert_eq!(p.workers, 2);
        assert_eq!(p.out_dir, Path::new("/base/out"));
        assert_eq!(
            p.models[0].path.as_deref(),
            Some(Path::new("/base/models/facades.safetensors"))
        );
        assert_eq!(p.models[0].precision, Precision::F32, "the default");
        assert_eq!(p.steps.len(), 3);
        assert!(matches!(
            p.steps[1],
            StepSpec::Translate(TranslateSpec {
                model: 0,
                size_policy: SizePolicy::Tile,
                tile_overlap: 32,
                ..
            })
        ));
    }

    #[test]
    fn errors_name_line_column_and_key() {
        let e = err(&EXAMPLE.replace("width = 512", "width = \"wide\""));
        assert!(e.starts_with("p.toml:30:9: [[step]] #3, key `width`: invalid type"), "{e}");
        let e = err(&EXAMPLE.replace("half = \"right\"", "halve = \"right\""));
        assert!(
            e.starts_with(
                "p.toml:20:1: [[step]] #1, key `halve`: unknown field `halve`, expected one of"
            ),
            "{e}"
        );
        let e = err(&EXAMPLE.replace("op = \"resize\"", "op = \"blur\""));
        assert!(e.contains("p.toml:29:6: [[step]] #3, key `op`: unknown op \"blur\"; valid ops: split, crop, resize, flip, translate, concat"), "{e}");
        let e = err(&EXAMPLE.replace("half = \"right\"", "width = 3"));
        assert!(e.contains("p.toml:20:9: [[step]] #1, key `width`: key `width` does not apply to op \"split\"; its keys: half"), "{e}");
        let e = err(&EXAMPLE.replace("size_policy = \"tile\"", "size_policy = \"tiles\""));
        assert!(e.contains("p.toml:25:15: [[step]] #2, key `size_policy`: unknown variant `tiles`, expected one of `resize`, `pad`, `tile`"), "{e}");
        let bf16 = EXAMPLE
            .replace("norm_stats = \"batch\"", "norm_stats = \"batch\"\nprecision = \"bf16\"");
        let p = parse(&bf16, "p.toml", Path::new("/base")).unwrap();
        assert_eq!(p.models[0].precision, Precision::Bf16);
        let e = err(&bf16.replace("\"bf16\"", "\"fp16\""));
        assert!(e.contains("p.toml:17:13: [[model]] #1, key `precision`: unknown variant `fp16`, expected `f32` or `bf16`"), "{e}");
        let e = err(&EXAMPLE.replace("workers = 2", "worker = 2"));
        assert!(e.starts_with("p.toml:1:1: key `worker`: unknown field `worker`"), "{e}");
        let e = err(&EXAMPLE.replace("model = \"facades\"", "model = \"maps\""));
        assert!(e.contains("key `model`: unknown model \"maps\" (declared: facades)"), "{e}");
        let e = err(&EXAMPLE.replace("paths = [\"labels/\", \"more/*.png\"]", "paths = [\"a\""));
        assert!(e.starts_with("p.toml:6:1: [input]") && e.contains("invalid array"), "{e}");
        let e = err(&EXAMPLE.replace("{stem}_{model}.png", "{stem}_{modle}.png"));
        assert!(e.contains("[output], key `name`: unknown placeholder {modle}"), "{e}");
    }
}
