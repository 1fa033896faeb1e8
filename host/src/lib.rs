//! The host's pieces as a library: `main.rs` is the command line over them, and the fuzz
//! targets (`fuzz/`) reach the pipeline config parser through it. Not a stable API: the plugin's
//! interface is `pix2pix-ffi`.

pub mod atomic;
pub mod batch;
pub mod bench;
pub mod cancel;
pub mod eval;
pub mod exit;
pub mod export;
pub mod file_check;
pub mod imageio;
pub mod info;
pub mod inputs;
pub mod jpeg_check;
pub mod no_replace;
pub mod outputs;
pub mod pipeline;
pub mod plugin;
pub mod run;
pub mod settings;
pub mod shard;
pub mod train;
pub mod train_overwrite;
