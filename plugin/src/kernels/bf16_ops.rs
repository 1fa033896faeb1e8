//! Forward-only candle ops running frozen layers on their bf16-packed weights
//! ([`super::Precision::Bf16`]): the packed matrix lives in the op, the input is its operand.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};

use super::amx_conv::{self, AmxConvWeights};
use super::amx_conv_transpose::{self, AmxConvTWeights};
use super::bf16::sgemm_bf16_rows;
use super::bf16::PackedA;
use super::bf16_channels::{self, Bf16ChannelWeights};
use super::conv2d::conv_core;
use super::conv_transpose::{by_image_groups, conv_t_core, ConvTranspose2dOp};
use super::gemm::Weights;
use super::im2col::Geom;
use super::{concat_parts, contiguous_f32, dims4};

/// Conv2d on the packed `cout × cin·kh·kw` weights.
pub(crate) struct PackedConv2dOp {
    pub w: Arc<PackedA>,
    /// Added in the product's output pass (one pass over the output saved).
    pub bias: Option<Vec<f32>>,
    pub kernel: (usize, usize),
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    /// The LeakyReLU slope applied to the input as it is read (see [`conv_core`]).
    pub act: Option<f32>,
}

impl CustomOp1 for PackedConv2dOp {
    fn name(&self) -> &'static str {
        "pix2pix-conv2d-bf16"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, (nb, cin, h, w)) = (contiguous_f32(s, l)?, dims4(l)?);
        let g = Geom::conv(cin, (h, w), self.kernel, self.stride, self.padding, self.dilation)?;
        if g.rows() != self.w.cols() {
            candle_core::bail!(
                "conv2d (bf16): input has {cin} channels, kernel expects {}",
                self.w.cols() / (self.kernel.0 * self.kernel.1)
            )
        }
        let y = conv_core(x, nb, &g, Weights::Bf16(&self.w), self.bias.as_deref(), self.act);
        Ok((CpuStorage::F32(y), Shape::from((nb, self.w.rows(), g.oh, g.ow))))
    }
}

/// A stride-2 Conv2d on AMX, its weights packed as tiles ([`amx_conv`]).
pub(crate) struct AmxConv2dOp {
    pub w: Arc<AmxConvWeights>,
    pub bias: Option<Vec<f32>>,
    pub padding: usize,
    /// The LeakyReLU slope applied to the input as it is copied.
    pub act: Option<f32>,
}

impl CustomOp1 for AmxConv2dOp {
    fn name(&self) -> &'static str {
        "pix2pix-conv2d-amx"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, (nb, cin, h, w)) = (contiguous_f32(s, l)?, dims4(l)?);
        if cin != self.w.channels() {
            candle_core::bail!(
                "conv2d (amx): input has {cin} channels, kernel expects {}",
                self.w.channels()
            )
        }
        let m = self.w.rows();
        let g = Geom::conv(cin, (h, w), self.w.kernel(), 2, self.padding, 1)?;
        if !amx_conv::suits(&g, m) {
            candle_core::bail!("conv2d (amx): input {h}x{w} does not suit the AMX kernel")
        }
        let y = super::profile::timed(
            || format!("conv   amx      {m}x{cin}x{nb} k{} s2 @{}x{}", g.kh, g.oh, g.ow),
            2.0 * (m * nb * g.grid() * g.rows()) as f64,
            || amx_conv::conv(x, nb, &g, &self.w, self.bias.as_deref(), self.act),
        );
        Ok((CpuStorage::F32(y), Shape::from((nb, m, g.oh, g.ow))))
    }
}

/// Conv2d on the channel tiles in bf16 ([`bf16_channels`], CPUs with AVX512_BF16 and no AMX).
pub(crate) struct ChannelConv2dOp {
    pub w: Arc<Bf16ChannelWeights>,
    pub bias: Option<Vec<f32>>,
    pub kernel: (usize, usize),
    pub stride: usize,
    pub padding: usize,
    /// The LeakyReLU slope applied to the input as it is copied.
    pub act: Option<f32>,
}

impl CustomOp1 for ChannelConv2dOp {
    fn name(&self) -> &'static str {
        "pix2pix-conv2d-bf16-channels"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, (nb, cin, h, w)) = (contiguous_f32(s, l)?, dims4(l)?);
        let m = self.w.rows();
        let g = Geom::conv(cin, (h, w), self.kernel, self.stride, self.padding, 1)?;
        if g.rows() != self.w.cols() {
            candle_core::bail!(
                "conv2d (bf16 channels): input has {cin} channels, kernel expects {}",
                self.w.cols() / (self.kernel.0 * self.kernel.1)
            )
        }
        if !bf16_channels::suits(&g, m) {
            candle_core::bail!("conv2d (bf16 channels): input {h}x{w} does not suit the kernel")
        }
        let y = super::profile::timed(
            || format!("conv   bf16 ch  {m}x{cin}x{nb} k{} s{} @{}x{}", g.kh, g.stride, g.oh, g.ow),
            2.0 * (m * nb * g.grid() * g.rows()) as f64,
            || bf16_channels::conv(x, nb, &g, &self.w, self.bias.as_deref(), self.act),
        );
        Ok((CpuStorage::F32(y), Shape::from((nb, m, g.oh, g.ow))))
    }
}

/// The transposed convolution on the packed `cout·kh·kw × cin` weights: on one input
/// (`CustomOp1`), or on the concatenation of two along channels (`CustomOp2`, the skip
/// concatenation, read in place as its column panels are packed, never written out).
pub(crate) struct PackedConvTranspose2dOp {
    pub w: Arc<PackedA>,
    /// Added by col2im.
    pub bias: Option<Vec<f32>>,
    pub cout: usize,
    pub kernel: (usize, usize),
    pub op: ConvTranspose2dOp,
    /// The input rectified as it is read.
    pub relu: bool,
}

impl PackedConvTranspose2dOp {
    fn run(&self, inputs: &[(&CpuStorage, &Layout)]) -> Result<(CpuStorage, Shape)> {
        const WHAT: &str = "conv_transpose2d (bf16)";
        let (parts, (nb, h, w)) = concat_parts(inputs, self.w.cols(), WHAT)?;
        let g = self.op.geom(self.cout, (h, w), self.kernel)?;
        let bias = self.bias.as_deref();
        let y = match (&parts[..], self.relu) {
            (&[(x, _)], false) => conv_t_core(x, nb, &g, Weights::Bf16(&self.w), bias),
            _ => {
                let (k, s) = (self.w.cols(), h * w);
                let source = super::part_channels(&parts);
                by_image_groups(nb, k, &g, bias, |col, col_rs, n| {
                    sgemm_bf16_rows(col, col_rs, &self.w, s, |r, j0, out| {
                        let (p, cc) = source[r];
                        let (x, pc) = parts[p];
                        let row = &x[(n * pc + cc) * s + j0..][..out.len()];
                        match self.relu {
                            true => out.iter_mut().zip(row).for_each(|(o, &v)| *o = v.max(0.0)),
                            false => out.copy_from_slice(row),
                        }
                    })
                })
            }
        };
        Ok((CpuStorage::F32(y), Shape::from((nb, self.cout, g.h, g.w))))
    }
}

super::on_concat_parts!(
    PackedConvTranspose2dOp,
    "pix2pix-conv-transpose2d-bf16",
    "pix2pix-cat-conv-transpose2d-bf16"
);

/// The U-Net's transposed convolution on AMX, its weights packed as tiles per output phase
/// ([`amx_conv_transpose`]): on one input (`CustomOp1`), or on the concatenation of two along
/// channels (`CustomOp2`, the skip concatenation, never written out).
pub(crate) struct AmxConvTranspose2dOp {
    pub w: Arc<AmxConvTWeights>,
    pub bias: Option<Vec<f32>>,
    /// The input rectified as it is read.
    pub relu: bool,
}

impl AmxConvTranspose2dOp {
    fn run(&self, inputs: &[(&CpuStorage, &Layout)]) -> Result<(CpuStorage, Shape)> {
        const WHAT: &str = "conv_transpose2d (amx)";
        let (parts, (nb, h, w)) = concat_parts(inputs, self.w.channels(), WHAT)?;
        let (m, cin) = (self.w.rows(), self.w.channels());
        if !amx_conv_transpose::suits(cin, m, (4, 4), w, true) {
            candle_core::bail!("{WHAT}: input {h}x{w} does not suit the AMX kernel")
        }
        let y = super::profile::timed(
            || format!("convT  amx      {cin}x{m}x{nb} k4 s2 @{h}x{w}"),
            2.0 * (16 * m * cin * nb * h * w) as f64,
            || {
                let bias = self.bias.as_deref();
                amx_conv_transpose::conv_t(&parts, nb, (h, w), &self.w, bias, self.relu)
            },
        );
        Ok((CpuStorage::F32(y), Shape::from((nb, m, 2 * h, 2 * w))))
    }
}

super::on_concat_parts!(
    AmxConvTranspose2dOp,
    "pix2pix-conv-transpose2d-amx",
    "pix2pix-cat-conv-transpose2d-amx"
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::mat::test_values;
    use crate::kernels::{isa, test_report};
    use candle_core::{Device, Tensor};

    /// The transposed convolution reading the skip concatenation's two parts in place,
    /// rectified as its panels are packed, gives to the bit what it gives on the concatenation
    /// made and rectified first: one image and two, a grid past a panel group's width, parts of
    /// unequal channels.
    #[test]
    fn packed_transposed_conv_reads_the_concatenation_in_place() {
        if !isa::bf16_available() {
            test_report::skipped("bf16 transposed conv on the parts", "no AVX512_BF16 on this CPU");
            return;
        }
        let dev = Device::Cpu;
        for (nb, ca, cb, cout, side) in [(1, 32, 32, 32, 32), (2, 48, 16, 24, 40)] {
            let cin = ca + cb;
            let t = |n: usize, scale: f32, dims: &[usize]| {
                let v: Vec<f32> = test_values(n, scale).iter().map(|v| v - 0.3).collect();
                Tensor::from_vec(v, dims, &dev).expect("tensor")
            };
            let a = t(nb * ca * side * side, 1.0, &[nb, ca, side, side]);
            let b = t(nb * cb * side * side, 1.0, &[nb, cb, side, side]);
            // Row-major (cout, 4, 4, cin): the packed product's rows.
            let w = test_values(cout * 16 * cin, 0.2);
            let op = PackedConvTranspose2dOp {
                w: Arc::new(PackedA::new(crate::kernels::mat::Mat::rm(&w, cout * 16, cin))),
                bias: Some(test_values(cout, 0.1)),
                cout,
                kernel: (4, 4),
                op: ConvTranspose2dOp {
                    stride: 2,
                    padding: 1,
                    dilation: 1,
                    output_padding: (0, 0),
                },
                relu: true,
            };
            let got = a.apply_op2_no_bwd(&b, &op).expect("on the parts");
            let cat = Tensor::cat(&[&a, &b], 1).and_then(|c| c.relu()).expect("cat + relu");
            let whole = PackedConvTranspose2dOp { relu: false, ..op };
            let want = cat.apply_op1_no_bwd(&whole).expect("on the concatenation");
            assert_eq!(got.dims(), &[nb, cout, 2 * side, 2 * side]);
            let bits = |t: &Tensor| -> Vec<u32> {
                let v = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("values");
                v.iter().map(|x| x.to_bits()).collect()
            };
            assert!(bits(&got) == bits(&want), "{nb}x({ca}+{cb}) -> {cout} @{side}: differs");
        }
        test_report::passed("bf16 transposed conv on the parts");
    }
}
