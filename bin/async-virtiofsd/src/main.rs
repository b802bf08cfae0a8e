//! async-virtiofsd: a virtio-fs vhost-user backend daemon built on tokio.
//!
//! Request path, by crate: `virtiofs-device` (vhost-user glue, queues) → `virtiofs-pipeline`
//! (queue tasks, concurrency bound, INIT/DESTROY gate) → `virtiofs-passthrough` (the shared
//! directory as a FUSE filesystem). This binary parses the command line, sets up logging and
//! runs [`daemon::run`].

mod cli;
mod compat;
mod daemon;
mod logging;
mod manual;
mod scheduling;
mod socket;
mod systemd;

use std::process::ExitCode;

fn main() -> ExitCode {
    let opts = match cli::parse(std::env::args_os()) {
        Ok(cli::Parsed::Run(opts)) => *opts,
        Ok(cli::Parsed::Exit(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            error_line(&e);
            return ExitCode::from(2);
        }
    };
    logging::init(opts.log_level, opts.syslog);
    match daemon::run(opts) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            error_line(&e);
            ExitCode::FAILURE
        }
    }
}

/// The one-line error on stderr; a broken stderr must not turn it into a panic.
fn error_line(e: &dyn std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "async-virtiofsd: error: {e}");
}
