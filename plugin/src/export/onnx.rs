//! A generator as an ONNX model (opset 17), for ONNX Runtime, OpenCV's dnn module, ffmpeg's
//! `dnn_processing` and other runtimes.
//!
//! The graph is built from the checkpoint's tensors by key, walking the architecture the way
//! [`crate::unet`] and [`crate::resnet`] build it (the reference's `nn.Sequential` indices, a
//! norm layer taking an index only when there is one), so any depth, width and norm the file
//! holds is exported. Every tensor is checked against the shape the layer needs and every tensor
//! of the file must be used, as when the network is opened.
//!
//! The model: input `input`, output `output`, NCHW float32 in [-1, 1], dimensions `batch`,
//! `height`, `width` left free. Height and width must be multiples of the network's stride
//! (2^depth for a U-Net, 4 for a ResNet; the `stride` metadata entry), as `host run` makes them
//! by reflect-padding. Dropout is left out (inference). Normalisation as chosen:
//! - running statistics: `BatchNormalization` in inference form (runtimes fold it into the
//!   convolutions);
//! - batch statistics: mean and biased variance over N, H, W by `ReduceMean`/`Sub`/`Mul`/`Sqrt`
//!   nodes, as PyTorch's train-mode batch norm (a batch of several images shares them, as in
//!   PyTorch; `host run` translates one image at a time).
//!
//! Instance norm (`affine=False`, no running statistics in the reference) is
//! `InstanceNormalization` with unit scale and zero bias either way.

use std::collections::HashSet;

use prost::Message;

use super::proto::*;
use crate::nets::resnet::ResnetConfig;
use crate::nets::unet::UnetConfig;
use crate::{Checkpoint, Error, GeneratorConfig, NormKind, NormStats, Result};

/// The operator set the graph is written for (ONNX Runtime ≥ 1.12, OpenCV ≥ 4.7).
pub const OPSET: i64 = 17;
/// The IR version that goes with opset 17.
const IR_VERSION: i64 = 8;
/// PyTorch's default for `BatchNorm2d` and `InstanceNorm2d`.
const EPS: f32 = 1e-5;
/// A protobuf message may not exceed 2 GiB; larger weights would need external data files.
const MAX_BYTES: usize = (1 << 31) - 1;

/// Serialises the generator `config` with the weights of `ckpt` as an ONNX model.
pub fn generator_to_onnx(
    ckpt: &Checkpoint,
    config: GeneratorConfig,
    stats: NormStats,
) -> Result<Vec<u8>> {
    let mut g = Graph::new(ckpt, stats);
    let output = match config {
        GeneratorConfig::Unet(c) => unet(&mut g, "input", c)?,
        GeneratorConfig::Resnet(c) => resnet(&mut g, "input", c)?,
    };
    // The last node writes the graph's output under its public name.
    g.rename_output(&output, "output");
    if let Some(extra) = ckpt.names().find(|n| !g.used.contains(*n)) {
        return Err(Error::checkpoint(
            &ckpt.path,
            format!(
                "tensor `{extra}` {:?} is not part of the {} network read off the file",
                ckpt.dims(extra).unwrap_or(&[]),
                config.net_g()
            ),
        ));
    }
    let (cin, cout) = config.channels();
    let stats_name = match (config.norm(), stats) {
        (NormKind::Batch, NormStats::Running) => "running",
        (NormKind::Batch, NormStats::Batch) => "batch",
        // Instance norm and no norm have no running statistics: the choice changes nothing.
        _ => "per-image",
    };
    let doc = format!(
        "pix2pix generator {} (ngf {}, {} norm, {stats_name} statistics): input NCHW float32 in [-1, 1] \
         (v / 127.5 - 1 for 8-bit RGB), output the same range; height and width must be multiples of {}.",
        config.net_g(),
        config.ngf(),
        config.norm().name(),
        config.stride()
    );
    let tensor_type = |c: usize| {
        let dim = |p: &str| Dimension { dim_param: Some(p.into()), dim_value: None };
        let shape = TensorShapeProto {
            dim: vec![
                dim("batch"),
                Dimension { dim_value: Some(c as i64), dim_param: None },
                dim("height"),
                dim("width"),
            ],
        };
        Some(TypeProto {
            tensor_type: Some(TensorTypeProto { elem_type: FLOAT, shape: Some(shape) }),
        })
    };
    let meta = |k: &str, v: String| StringStringEntryProto { key: k.into(), value: v };
    let model = ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "pix2pix".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: doc.clone(),
        graph: Some(GraphProto {
            name: config.net_g(),
            doc_string: doc,
            input: vec![ValueInfoProto {
                name: "input".into(),
                r#type: tensor_type(cin),
                doc_string: "NCHW in [-1, 1]".into(),
            }],
            output: vec![ValueInfoProto {
                name: "output".into(),
                r#type: tensor_type(cout),
                doc_string: "NCHW in [-1, 1]".into(),
            }],
            node: std::mem::take(&mut g.nodes),
            initializer: std::mem::take(&mut g.initializers),
        }),
        metadata_props: vec![
            meta("net_g", config.net_g()),
            meta("ngf", config.ngf().to_string()),
            meta("norm", config.norm().name().into()),
            meta("norm_stats", stats_name.into()),
            meta("stride", config.stride().to_string()),
            meta("input_range", "[-1, 1]".into()),
            meta("source", ckpt.path.display().to_string()),
        ],
    };
    let len = model.encoded_len();
    if len > MAX_BYTES {
        return Err(Error::invalid(
            "model",
            format!("{len} bytes of ONNX exceed protobuf's 2 GiB limit"),
        ));
    }
    Ok(model.encode_to_vec())
}

/// Which convolution node [`Graph::conv_node`] writes.
#[derive(Clone, Copy)]
enum Conv {
    Forward,
    Transposed { out_pad: usize },
}

/// The graph under construction: nodes, initializers (named by their checkpoint keys) and the
/// checkpoint keys consumed so far.
struct Graph<'a> {
    ckpt: &'a Checkpoint,
    stats: NormStats,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    used: HashSet<String>,
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: ATTR_INTS, ints: v.to_vec(), ..Default::default() }
}
fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: ATTR_INT, i: Some(v), ..Default::default() }
}
fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: ATTR_FLOAT, f: Some(v), ..Default::default() }
}
fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: ATTR_STRING,
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

impl<'a> Graph<'a> {
    fn new(ckpt: &'a Checkpoint, stats: NormStats) -> Self {
        Self { ckpt, stats, nodes: Vec::new(), initializers: Vec::new(), used: HashSet::new() }
    }

    /// Appends a node with one output, named after its op and position; returns that name.
    fn node(&mut self, op: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> String {
        let name = format!("{op}_{}", self.nodes.len());
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![name.clone()],
            name: name.clone(),
            op_type: op.into(),
            attribute,
        });
        name
    }

    fn rename_output(&mut self, from: &str, to: &str) {
        for n in &mut self.nodes {
            for o in n.output.iter_mut().filter(|o| *o == from) {
                *o = to.into();
            }
        }
    }

    fn f32_initializer(&mut self, name: String, dims: &[usize], values: &[f32]) -> String {
        let raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            name: name.clone(),
            raw_data,
        });
        name
    }

    fn i64_initializer(&mut self, name: String, values: &[i64]) -> String {
        let raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: INT64,
            name: name.clone(),
            raw_data,
        });
        name
    }

    /// The checkpoint tensor `key`, which must have shape `shape`, marked as used.
    fn tensor(&mut self, key: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self.ckpt.get(key).ok_or_else(|| {
            Error::checkpoint(
                &self.ckpt.path,
                format!("missing tensor `{key}` (the network needs shape {shape:?})"),
            )
        })?;
        if t.dims() != shape {
            return Err(Error::checkpoint(
                &self.ckpt.path,
                format!(
                    "tensor `{key}` has shape {:?} in the file but the network needs {shape:?}",
                    t.dims()
                ),
            ));
        }
        self.used.insert(key.to_string());
        Ok(t.flatten_all()?.to_vec1::<f32>()?)
    }

    /// The checkpoint tensor `key` as an initializer of the same name, stored with `dims`
    /// (the same elements, e.g. a per-channel vector as 1×C×1×1 for broadcasting).
    fn weight(&mut self, key: &str, shape: &[usize], dims: &[usize]) -> Result<String> {
        let v = self.tensor(key, shape)?;
        Ok(self.f32_initializer(key.to_string(), dims, &v))
    }

    /// `nn.Conv2d(cin, cout, k, stride, padding, bias)` at `prefix`.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        x: &str,
        prefix: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        bias: bool,
    ) -> Result<String> {
        self.conv_node(Conv::Forward, x, prefix, [cin, cout], [k, stride, pad], bias)
    }

    /// `nn.ConvTranspose2d(cin, cout, k, stride, padding, output_padding, bias)` at `prefix`.
    #[allow(clippy::too_many_arguments)]
    fn conv_transpose(
        &mut self,
        x: &str,
        prefix: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        out_pad: usize,
        bias: bool,
    ) -> Result<String> {
        let op = Conv::Transposed { out_pad };
        self.conv_node(op, x, prefix, [cin, cout], [k, stride, pad], bias)
    }

    /// One `Conv` or `ConvTranspose` node over the checkpoint's `prefix.weight` (and bias):
    /// square kernel `k`, stride and padding alike on both axes.
    fn conv_node(
        &mut self,
        op: Conv,
        x: &str,
        prefix: &str,
        [cin, cout]: [usize; 2],
        [k, stride, pad]: [usize; 3],
        bias: bool,
    ) -> Result<String> {
        // PyTorch's layouts are ONNX's: cout × cin × k × k, and cin × cout × k × k transposed.
        let shape = match op {
            Conv::Forward => [cout, cin, k, k],
            Conv::Transposed { .. } => [cin, cout, k, k],
        };
        let w = self.weight(&format!("{prefix}.weight"), &shape, &shape)?;
        let mut inputs = vec![x.to_string(), w];
        if bias {
            inputs.push(self.weight(&format!("{prefix}.bias"), &[cout], &[cout])?);
        }
        let (k, s, p) = (k as i64, stride as i64, pad as i64);
        let mut attrs = vec![
            ints("kernel_shape", &[k, k]),
            ints("strides", &[s, s]),
            ints("pads", &[p, p, p, p]),
            ints("dilations", &[1, 1]),
            int("group", 1),
        ];
        let name = match op {
            Conv::Forward => "Conv",
            Conv::Transposed { out_pad } => {
                attrs.push(ints("output_padding", &[out_pad as i64, out_pad as i64]));
                "ConvTranspose"
            }
        };
        Ok(self.node(name, &inputs.iter().map(String::as_str).collect::<Vec<_>>(), attrs))
    }

    /// The norm layer of `kind` for `c` channels at `prefix`.
    fn norm(&mut self, x: &str, kind: NormKind, prefix: &str, c: usize) -> Result<String> {
        match kind {
            NormKind::None => Ok(x.to_string()),
            NormKind::Instance => {
                let scale =
                    self.f32_initializer(format!("{prefix}.instance_scale"), &[c], &vec![1.0; c]);
                let bias =
                    self.f32_initializer(format!("{prefix}.instance_bias"), &[c], &vec![0.0; c]);
                Ok(self.node(
                    "InstanceNormalization",
                    &[x, &scale, &bias],
                    vec![float("epsilon", EPS)],
                ))
            }
            NormKind::Batch => {
                let key = |s: &str| format!("{prefix}.{s}");
                // Read (and check) every tensor of the layer, whichever statistics are used.
                let running_mean = self.tensor(&key("running_mean"), &[c])?;
                let running_var = self.tensor(&key("running_var"), &[c])?;
                self.tensor(&key("num_batches_tracked"), &[])?;
                match self.stats {
                    NormStats::Running => {
                        let w = self.weight(&key("weight"), &[c], &[c])?;
                        let b = self.weight(&key("bias"), &[c], &[c])?;
                        let m = self.f32_initializer(key("running_mean"), &[c], &running_mean);
                        let v = self.f32_initializer(key("running_var"), &[c], &running_var);
                        Ok(self.node(
                            "BatchNormalization",
                            &[x, &w, &b, &m, &v],
                            vec![float("epsilon", EPS)],
                        ))
                    }
                    NormStats::Batch => {
                        let w = self.weight(&key("weight"), &[c], &[1, c, 1, 1])?;
                        let b = self.weight(&key("bias"), &[c], &[1, c, 1, 1])?;
                        let eps = self.f32_initializer(format!("{prefix}.eps"), &[], &[EPS]);
                        let axes = || vec![ints("axes", &[0, 2, 3]), int("keepdims", 1)];
                        let mean = self.node("ReduceMean", &[x], axes());
                        let centred = self.node("Sub", &[x, &mean], vec![]);
                        let square = self.node("Mul", &[&centred, &centred], vec![]);
                        let var = self.node("ReduceMean", &[&square], axes());
                        let var_eps = self.node("Add", &[&var, &eps], vec![]);
                        let std = self.node("Sqrt", &[&var_eps], vec![]);
                        let normed = self.node("Div", &[&centred, &std], vec![]);
                        let scaled = self.node("Mul", &[&normed, &w], vec![]);
                        Ok(self.node("Add", &[&scaled, &b], vec![]))
                    }
                }
            }
        }
    }

    fn reflection_pad(&mut self, x: &str, p: usize, name: &str) -> String {
        let p = p as i64;
        let pads = self.i64_initializer(format!("{name}.pads"), &[0, 0, p, p, 0, 0, p, p]);
        self.node("Pad", &[x, &pads], vec![string("mode", "reflect")])
    }
}

/// Child indices of a PyTorch `nn.Sequential` at `prefix`, handed out in order; layers without
/// tensors take an index too, a `norm = none` layer takes none.
struct Seq {
    prefix: String,
    next: usize,
}

impl Seq {
    fn new(prefix: String) -> Self {
        Self { prefix, next: 0 }
    }
    /// The key prefix of the next child.
    fn take(&mut self) -> String {
        self.next += 1;
        format!("{}.{}", self.prefix, self.next - 1)
    }
    /// A child without tensors (activation, padding, dropout).
    fn skip(&mut self) {
        self.next += 1;
    }
    fn norm(&mut self, g: &mut Graph, x: &str, kind: NormKind, c: usize) -> Result<String> {
        if !kind.is_some() {
            return Ok(x.to_string());
        }
        let prefix = self.take();
        g.norm(x, kind, &prefix, c)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Position {
    Outermost,
    Intermediate,
    Innermost,
}

/// One U-Net level: `outer` channels around it (`input` at the outermost), `inner` inside.
struct Level {
    outer: usize,
    inner: usize,
    input: usize,
    position: Position,
}

fn unet(g: &mut Graph, x: &str, c: UnetConfig) -> Result<String> {
    let UnetConfig { in_channels, out_channels, num_downs, ngf, norm, .. } = c;
    if num_downs < 5 {
        return Err(Error::invalid(
            "model",
            format!("a U-Net generator needs at least 5 downsamplings, got {num_downs}"),
        ));
    }
    let level = |outer, inner, position| Level { outer, inner, input: outer, position };
    let mut levels = vec![
        Level {
            outer: out_channels,
            inner: ngf,
            input: in_channels,
            position: Position::Outermost,
        },
        level(ngf, ngf * 2, Position::Intermediate),
        level(ngf * 2, ngf * 4, Position::Intermediate),
        level(ngf * 4, ngf * 8, Position::Intermediate),
    ];
    levels.extend((0..num_downs - 5).map(|_| level(ngf * 8, ngf * 8, Position::Intermediate)));
    levels.push(level(ngf * 8, ngf * 8, Position::Innermost));
    unet_block(g, x, &levels, norm, "model")
}

/// `UnetSkipConnectionBlock` at `prefix`: down, sub-block, up, and the skip concatenation.
fn unet_block(
    g: &mut Graph,
    x: &str,
    levels: &[Level],
    norm: NormKind,
    prefix: &str,
) -> Result<String> {
    let Some((&Level { outer, inner, input, position }, rest)) = levels.split_first() else {
        return Err(Error::invalid("model", "a U-Net needs at least one level"));
    };
    let bias = norm.conv_bias();
    let mut seq = Seq::new(format!("{prefix}.model"));
    let y = match position {
        Position::Outermost => {
            let h = g.conv(x, &seq.take(), input, inner, 4, 2, 1, bias)?;
            let h = unet_block(g, &h, rest, norm, &seq.take())?;
            let h = g.node("Relu", &[&h], vec![]);
            seq.skip();
            let h = g.conv_transpose(&h, &seq.take(), inner * 2, outer, 4, 2, 1, 0, true)?;
            return Ok(g.node("Tanh", &[&h], vec![]));
        }
        Position::Innermost => {
            let h = g.node("LeakyRelu", &[x], vec![float("alpha", 0.2)]);
            seq.skip();
            let h = g.conv(&h, &seq.take(), input, inner, 4, 2, 1, bias)?;
            let h = g.node("Relu", &[&h], vec![]);
            seq.skip();
            let h = g.conv_transpose(&h, &seq.take(), inner, outer, 4, 2, 1, 0, bias)?;
            seq.norm(g, &h, norm, outer)?
        }
        Position::Intermediate => {
            let h = g.node("LeakyRelu", &[x], vec![float("alpha", 0.2)]);
            seq.skip();
            let h = g.conv(&h, &seq.take(), input, inner, 4, 2, 1, bias)?;
            let h = seq.norm(g, &h, norm, inner)?;
            let h = unet_block(g, &h, rest, norm, &seq.take())?;
            let h = g.node("Relu", &[&h], vec![]);
            seq.skip();
            let h = g.conv_transpose(&h, &seq.take(), inner * 2, outer, 4, 2, 1, 0, bias)?;
            // Dropout, if any, comes last and is off at inference.
            seq.norm(g, &h, norm, outer)?
        }
    };
    Ok(g.node("Concat", &[x, &y], vec![int("axis", 1)]))
}

fn resnet(g: &mut Graph, x: &str, c: ResnetConfig) -> Result<String> {
    let ResnetConfig { in_channels, out_channels, ngf, n_blocks, norm, dropout } = c;
    let bias = norm.conv_bias();
    let mut seq = Seq::new("model".into());
    let p = seq.take();
    let h = g.reflection_pad(x, 3, &p);
    let h = g.conv(&h, &seq.take(), in_channels, ngf, 7, 1, 0, bias)?;
    let h = seq.norm(g, &h, norm, ngf)?;
    let mut h = g.node("Relu", &[&h], vec![]);
    seq.skip();
    for i in 0..2 {
        let m = 1 << i;
        h = g.conv(&h, &seq.take(), ngf * m, ngf * m * 2, 3, 2, 1, bias)?;
        h = seq.norm(g, &h, norm, ngf * m * 2)?;
        h = g.node("Relu", &[&h], vec![]);
        seq.skip();
    }
    for _ in 0..n_blocks {
        h = resnet_block(g, &h, ngf * 4, norm, dropout, &seq.take())?;
    }
    for i in 0..2 {
        let m = 1 << (2 - i);
        h = g.conv_transpose(&h, &seq.take(), ngf * m, ngf * m / 2, 3, 2, 1, 1, bias)?;
        h = seq.norm(g, &h, norm, ngf * m / 2)?;
        h = g.node("Relu", &[&h], vec![]);
        seq.skip();
    }
    let p = seq.take();
    let h = g.reflection_pad(&h, 3, &p);
    let h = g.conv(&h, &seq.take(), ngf, out_channels, 7, 1, 0, true)?;
    Ok(g.node("Tanh", &[&h], vec![]))
}

/// `ResnetBlock` at `prefix`: `x + conv_block(x)`.
fn resnet_block(
    g: &mut Graph,
    x: &str,
    dim: usize,
    norm: NormKind,
    dropout: bool,
    prefix: &str,
) -> Result<String> {
    let bias = norm.conv_bias();
    let mut seq = Seq::new(format!("{prefix}.conv_block"));
    let p = seq.take();
    let h = g.reflection_pad(x, 1, &p);
    let h = g.conv(&h, &seq.take(), dim, dim, 3, 1, 0, bias)?;
    let h = seq.norm(g, &h, norm, dim)?;
    let h = g.node("Relu", &[&h], vec![]);
    seq.skip();
    if dropout {
        seq.skip();
    }
    let p = seq.take();
    let h = g.reflection_pad(&h, 1, &p);
    let h = g.conv(&h, &seq.take(), dim, dim, 3, 1, 0, bias)?;
    let h = seq.norm(g, &h, norm, dim)?;
    Ok(g.node("Add", &[x, &h], vec![]))
}
