//! Logging: `tracing` to stderr, one line per event, or with `--syslog` to the syslog socket.

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::cli::LogLevel;

/// The syslog socket.
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// For tests only: another datagram socket to use instead of [`SYSLOG_SOCKET`].
pub const SYSLOG_SOCKET_ENV: &str = "ASYNC_VIRTIOFSD_SYSLOG_SOCKET";

/// The name messages carry (RFC 3164 TAG).
const TAG: &str = "async-virtiofsd";

/// syslog facility LOG_USER, as the Rust virtiofsd logs (its `syslog` crate's default).
const FACILITY_USER: u8 = 1;

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `level`. With `syslog`, events
/// go to the syslog socket, connected now (before the sandbox hides it); if it cannot be
/// reached, a warning goes to stderr and so does the log.
pub fn init(level: LogLevel, syslog: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level.as_directive()));
    // A log line that cannot be written is dropped: tracing-subscriber would report it with
    // `eprintln!`, which panics when stderr is a broken pipe (its reader died), and a panic in
    // the sandbox ends in SIGSYS. The daemon must outlive whoever reads its log.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .log_internal_errors(false);
    if syslog {
        match Syslog::connect() {
            Ok(writer) => {
                builder.with_writer(writer).without_time().init();
                return;
            }
            Err((path, e)) => {
                builder.with_writer(OneLine).init();
                tracing::warn!(
                    "--syslog: cannot connect to {}: {e}; logging to stderr",
                    path.display()
                );
                return;
            }
        }
    }
    builder.with_writer(OneLine).init();
}

/// Replaces embedded newlines: some libraries (fuse-backend-rs) log messages with embedded
/// newlines, which break line-oriented log collectors (journald, Kata's log parser).
fn flatten(buf: &[u8]) -> Vec<u8> {
    // The fmt layer hands over one formatted event per call.
    let body = buf.strip_suffix(b"\n").unwrap_or(buf);
    let mut line = Vec::with_capacity(buf.len() + 8);
    for &b in body {
        match b {
            b'\n' => line.extend_from_slice(b" | "),
            b => line.push(b),
        }
    }
    line
}

/// Writes each event to stderr on one line.
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
        let mut line = flatten(buf);
        line.push(b'\n');
        io::stderr().lock().write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// The syslog socket, connected once: one RFC 3164 datagram per event,
/// `<PRI>Mmm dd hh:mm:ss async-virtiofsd[PID]: LEVEL target: message` (what glibc's syslog(3)
/// sends to /dev/log). The PID is the one of the process that was started (in namespace mode the
/// supervisor's: the daemon is its child in a new PID namespace, where its own PID is 1).
#[derive(Clone)]
struct Syslog {
    socket: Arc<UnixDatagram>,
    pid: u32,
}

impl Syslog {
    fn connect() -> Result<Self, (PathBuf, io::Error)> {
        let path = std::env::var_os(SYSLOG_SOCKET_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(SYSLOG_SOCKET));
        let connect = || -> io::Result<UnixDatagram> {
            let socket = UnixDatagram::unbound()?;
            socket.connect(&path)?;
            // A syslog daemon that does not keep up costs us messages, never a stalled request.
            socket.set_nonblocking(true)?;
            Ok(socket)
        };
        let socket = connect().map_err(|e| (path.clone(), e))?;
        // The first localtime_r reads the time zone; inside the sandbox /etc/localtime is gone.
        let _ = timestamp();
        Ok(Self {
            socket: Arc::new(socket),
            pid: std::process::id(),
        })
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogEvent;
    fn make_writer(&'a self) -> Self::Writer {
        // Writes without an event's metadata (none in practice): severity info.
        SyslogEvent {
            syslog: self.clone(),
            severity: severity(Level::INFO),
        }
    }
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        SyslogEvent {
            syslog: self.clone(),
            severity: severity(*meta.level()),
        }
    }
}

/// syslog severity of a tracing level: error → err (3), warn → warning (4), info → info (6),
/// debug and trace → debug (7).
pub fn severity(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// One event on its way to syslog.
struct SyslogEvent {
    syslog: Syslog,
    severity: u8,
}

impl Write for SyslogEvent {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let pri = FACILITY_USER * 8 + self.severity;
        let mut datagram =
            format!("<{pri}>{} {TAG}[{}]: ", timestamp(), self.syslog.pid).into_bytes();
        datagram.extend_from_slice(&flatten(buf));
        // Lost if the syslog daemon is gone or its queue is full: there is nowhere else to say so.
        let _ = self.syslog.socket.send(&datagram);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// RFC 3164 TIMESTAMP, local time: `Mmm dd hh:mm:ss` with the day padded by a space.
fn timestamp() -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // SAFETY: time(NULL) and localtime_r with a local struct to fill.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let now = unsafe { libc::time(std::ptr::null_mut()) };
    if unsafe { libc::localtime_r(&now, &mut tm) }.is_null() {
        return "Jan  1 00:00:00".into();
    }
    format!(
        "{} {:>2} {:02}:{:02}:{:02}",
        MONTHS[tm.tm_mon.clamp(0, 11) as usize],
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_are_rfc3164() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let client = UnixDatagram::unbound().unwrap();
        client.connect(&path).unwrap();
        let syslog = Syslog {
            socket: Arc::new(client),
            pid: 42,
        };
        let mut event = SyslogEvent {
            syslog,
            severity: severity(Level::WARN),
        };
        event.write_all(b" WARN x: two\nlines\n").unwrap();
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        let msg = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(msg.starts_with("<12>"), "{msg}");
        let (stamp, rest) = msg[4..].split_at(15);
        assert_eq!(stamp.as_bytes()[3], b' ', "{msg}");
        assert_eq!(&stamp[9..10], ":", "{msg}");
        assert_eq!(rest, " async-virtiofsd[42]:  WARN x: two | lines");
    }

    #[test]
    fn severities() {
        assert_eq!(severity(Level::ERROR), 3);
        assert_eq!(severity(Level::INFO), 6);
        assert_eq!(severity(Level::TRACE), 7);
    }
}
