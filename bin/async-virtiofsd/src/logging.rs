//! Logging: `tracing` to stderr, one line per event.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::cli::LogLevel;

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `level`.
pub fn init(level: LogLevel) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level.as_directive()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(OneLine)
        .with_ansi(false)
        .init();
}

/// Writes each event to stderr on one line: some libraries (fuse-backend-rs) log messages with
/// embedded newlines, which break line-oriented log collectors (journald, Kata's log parser).
#[derive(Clone, Copy)]
struct OneLine;

impl<'a> MakeWriter<'a> for OneLine {
    type Writer = OneLine;
    fn make_writer(&'a self) -> Self::Writer {
        OneLine
    }
}

impl Write for OneLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The fmt layer hands over one formatted event per call.
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        let mut line = Vec::with_capacity(buf.len() + 8);
        for &b in body {
            match b {
                b'\n' => line.extend_from_slice(b" | "),
                b => line.push(b),
            }
        }
        line.push(b'\n');
        io::stderr().lock().write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}
