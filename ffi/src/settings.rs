//! The settings both sides of the contract name: each one is declared here once, with its
//! default, its name and its parser. Hosts take their defaults and spellings from here; the
//! plugin converts each at one place per face (the C codes in [`crate::c`]).

use abi_stable::StableAbi;

/// Tile overlap in pixels when none is given (the tile size policy).
pub const DEFAULT_TILE_OVERLAP: u32 = 32;

/// Which normalisation statistics a model uses at inference.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NormStats {
    /// Statistics of the image itself (train-mode norm): the paper's test-time protocol.
    #[default]
    Batch = 0,
    /// The running statistics stored in the checkpoint (PyTorch's eval mode).
    Running = 1,
}

/// The arithmetic of inference products.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// f32 throughout: matches the PyTorch reference to float precision.
    #[default]
    F32 = 0,
    /// Weights and activations rounded to bf16 for the convolutions' products, accumulated in
    /// f32, on CPUs with AVX512_BF16 (elsewhere f32 runs instead; the plugin lists the feature
    /// `bf16` where it can). Faster; outputs differ from f32 by about a level in 255.
    Bf16 = 1,
}

/// How images whose sides are not multiples of the network stride are translated.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SizePolicy {
    /// Bicubic resize to the network's native size, translate, resize back: fast, loses detail.
    Resize = 0,
    /// Reflect-pad to the next multiple of the network stride and translate the whole image at
    /// once: full detail and one set of batch statistics for the whole image. The default for
    /// images up to a few megapixels.
    #[default]
    Pad = 1,
    /// Overlapping native-size tiles blended with a feathered window: bounded memory for very
    /// large images.
    Tile = 2,
}

/// How an image's samples are stored: 8-bit, 16-bit (both unsigned integers, 0 = black, the
/// maximum = white) or 32-bit float in [0, 1]; native byte order, interleaved channels.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SampleFormat {
    #[default]
    U8 = 0,
    U16 = 1,
    F32 = 2,
}

impl SampleFormat {
    /// Bytes per sample.
    pub const fn bytes(self) -> usize {
        match self {
            SampleFormat::U8 => 1,
            SampleFormat::U16 => 2,
            SampleFormat::F32 => 4,
        }
    }
}

/// Which half of an aligned A|B image is the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// The left half is the input.
    AtoB,
    /// The right half is the input (the facades label → photo recipe): the default of
    /// evaluation, in every face.
    #[default]
    BtoA,
}

/// Name ↔ value for the enums above, so every host and face spells them alike.
macro_rules! names {
    ($ty:ident { $($variant:ident = $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every accepted name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($name),+];
            pub const fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($name => Some($ty::$variant),)+
                    _ => None,
                }
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

names!(NormStats { Batch = "batch", Running = "running" });
names!(Precision { F32 = "f32", Bf16 = "bf16" });
names!(SizePolicy { Resize = "resize", Pad = "pad", Tile = "tile" });
names!(Direction { AtoB = "AtoB", BtoA = "BtoA" });
names!(SampleFormat { U8 = "u8", U16 = "u16", F32 = "f32" });

/// A generator architecture by the reference's `netG` name: `unet_<side>` (a U-Net taking
/// sides that are multiples of `side`, a power of two from 32 to 65536) or `resnet_<n>blocks`
/// (1 to 64 residual blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GeneratorName {
    Unet { side: u32 },
    Resnet { blocks: u32 },
}

impl GeneratorName {
    /// The names the reference trainer offers.
    pub const REFERENCE: &'static [&'static str] =
        &["unet_256", "unet_128", "resnet_9blocks", "resnet_6blocks"];
    /// What [`GeneratorName::parse`] accepts, for error messages.
    pub const EXPECTED: &'static str =
        "unet_<side> with side a power of two ≥ 32, or resnet_<n>blocks";

    pub fn name(self) -> String {
        match self {
            GeneratorName::Unet { side } => format!("unet_{side}"),
            GeneratorName::Resnet { blocks } => format!("resnet_{blocks}blocks"),
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        if let Some(side) = s.strip_prefix("unet_") {
            let side: u32 = side.parse().ok()?;
            return (side.is_power_of_two() && (32..=1 << 16).contains(&side))
                .then_some(GeneratorName::Unet { side });
        }
        let blocks: u32 = s.strip_prefix("resnet_")?.strip_suffix("blocks")?.parse().ok()?;
        (1..=64).contains(&blocks).then_some(GeneratorName::Resnet { blocks })
    }
}

impl std::fmt::Display for GeneratorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in [SizePolicy::Resize, SizePolicy::Pad, SizePolicy::Tile] {
            assert_eq!(SizePolicy::parse(p.name()), Some(p));
        }
        for n in [NormStats::Batch, NormStats::Running] {
            assert_eq!(NormStats::parse(n.name()), Some(n));
        }
        for d in [Direction::AtoB, Direction::BtoA] {
            assert_eq!(Direction::parse(d.name()), Some(d));
        }
        assert_eq!(SizePolicy::parse("Pad"), None);
        assert_eq!(Direction::parse(""), None);
        for name in GeneratorName::REFERENCE {
            assert_eq!(GeneratorName::parse(name).map(GeneratorName::name).as_deref(), Some(*name));
        }
    }

    #[test]
    fn generator_names() {
        assert_eq!(GeneratorName::parse("unet_256"), Some(GeneratorName::Unet { side: 256 }));
        assert_eq!(
            GeneratorName::parse("resnet_9blocks"),
            Some(GeneratorName::Resnet { blocks: 9 })
        );
        for bad in [
            "unet_100",
            "unet_16",
            "unet_",
            "unet_131072",
            "resnet_blocks",
            "resnet_0blocks",
            "resnet_65blocks",
            "vgg",
            "",
        ] {
            assert_eq!(GeneratorName::parse(bad), None, "{bad}");
        }
    }
}
