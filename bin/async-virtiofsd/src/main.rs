//! async-virtiofsd: a virtio-fs vhost-user backend daemon built on tokio.
//!
//! Request path, by crate: `virtiofs-device` (vhost-user glue, queues) → `virtiofs-pipeline`
//! (queue tasks, concurrency bound, INIT/DESTROY gate) → `virtiofs-passthrough` (the shared
//! directory as a FUSE filesystem). This binary parses the command line, sets up logging and
//! runs [`daemon::run`].

mod cli;
mod daemon;
mod socket;

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

fn init_logging(level: cli::LogLevel) {
    // RUST_LOG, when set, overrides --log-level.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level.as_directive()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn main() -> ExitCode {
    let opts = match cli::parse(std::env::args_os()) {
        Ok(cli::Parsed::Run(opts)) => *opts,
        Ok(cli::Parsed::Exit(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("async-virtiofsd: error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(opts.log_level);
    match daemon::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("async-virtiofsd: error: {e}");
            ExitCode::FAILURE
        }
    }
}
