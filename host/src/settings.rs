//! The contract's settings (`pix2pix_ffi`: size policy, norm statistics, direction) as the CLI
//! and the pipeline TOML read them: by the contract's names, with the contract's defaults.

use clap::builder::TypedValueParser;
use pix2pix_ffi::{Direction, NormStats, Precision, SizePolicy};
use serde::{Deserialize, Deserializer};

/// A contract setting with its names and parser.
pub trait Named: Copy + Send + Sync + 'static {
    const NAMES: &'static [&'static str];
    fn parse(s: &str) -> Option<Self>;
}

macro_rules! named {
    ($($ty:ty),+) => {
        $(impl Named for $ty {
            const NAMES: &'static [&'static str] = <$ty>::NAMES;
            fn parse(s: &str) -> Option<Self> {
                <$ty>::parse(s)
            }
        })+
    };
}

named!(SizePolicy, NormStats, Direction, Precision);

/// The clap value parser of a setting: its names as the possible values.
pub fn parser<T: Named + Clone>() -> impl TypedValueParser<Value = T> {
    clap::builder::PossibleValuesParser::new(T::NAMES).try_map(|s: String| {
        T::parse(&s)
            .ok_or_else(|| format!("unknown value `{s}` (expected one of {})", T::NAMES.join(", ")))
    })
}

/// A setting read from TOML by its name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ByName<T>(pub T);

impl<'de, T: Named> Deserialize<'de> for ByName<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        T::parse(&s).map(ByName).ok_or_else(|| serde::de::Error::unknown_variant(&s, T::NAMES))
    }
}

/// Says on stderr when a model runs in another precision than asked for (bf16 on a CPU without
/// AVX512_BF16 runs in f32).
pub fn note_precision(asked: Precision, runs: Precision) {
    if asked != runs {
        eprintln!(
            "note: precision {} asked for, running {} (this CPU lacks AVX512_BF16)",
            asked.name(),
            runs.name()
        );
    }
}
