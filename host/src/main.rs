//! `host`: the command-line host of `libpix2pix.so`. It loads the plugin at run time through
//! its abi_stable root module (`pix2pix_ffi::Pix2PixModRef`) and never links the networks.

use std::process::ExitCode;

use host::{bench, eval, exit, export, info, pipeline, plugin, run, train};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "host",
    version,
    about = "Runs the pix2pix plugin (libpix2pix.so): translate images, train, evaluate, benchmark, batch pipelines"
)]
#[command(after_help = plugin::PLUGIN_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Plugin name, versions, ABI check result and features.
    Info(info::Args),
    /// Translate images (files, folders or globs) with a model.
    Run(run::Args),
    /// Train a model from a TOML config, with a progress bar; Ctrl-C saves a checkpoint.
    Train(train::Args),
    /// Evaluate a model on aligned A|B pairs: MAE, PSNR, SSIM and an HTML page.
    Eval(eval::Args),
    /// Time inference (and a training step) of a generator with random weights.
    #[command(after_long_help = bench::ABOUT)]
    Bench(bench::Args),
    /// Write a model for other runtimes: --onnx OUT (ONNX Runtime, OpenCV dnn, ffmpeg dnn_processing).
    #[command(after_long_help = export::ABOUT)]
    Export(export::Args),
    /// Run a batch filter pipeline described by a TOML file (--help shows the format).
    #[command(after_long_help = pipeline::ABOUT)]
    Pipeline(pipeline::Args),
}

fn main() -> ExitCode {
    // `host … | head` closes the pipe early: end quietly as other Unix tools do, not with Rust's
    // "failed printing to stdout" panic. Outputs are written atomically, so none is left half.
    #[cfg(unix)]
    // SAFETY: resetting a signal's disposition to the default, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(a) => info::main(a),
        Command::Run(a) => run::main(a),
        Command::Train(a) => train::main(a),
        Command::Eval(a) => eval::main(a),
        Command::Bench(a) => bench::main(a),
        Command::Export(a) => export::main(a),
        Command::Pipeline(a) => pipeline::main(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line per cause, no backtrace: these are the user's files and settings.
            // PIX2PIX_DEBUG=1 adds the cause chain and, with RUST_BACKTRACE=1, the backtrace.
            eprintln!("error: {e:#}");
            if std::env::var_os("PIX2PIX_DEBUG").is_some_and(|v| v != "0") {
                eprintln!("{e:?}");
            }
            ExitCode::from(exit::EXIT_ERROR)
        }
    }
}
