//! A short soak against the real daemon: a mixed workload at depth 256 over 4 queues for 20 s,
//! with DESTROY + INIT every 5 s and a disconnect + new daemon every 10 s. Every byte read back
//! and every file on the host must match the model; the daemons must exit 0 and hold no more
//! descriptors after a DESTROY than at their start.

#[allow(dead_code)] // only `daemon_bin` is used here
mod common;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::daemon_bin;
use vhost_user_fs_client::soak::{self, DaemonProcess, SoakConfig, SoakReport, Tolerance};

#[test]
fn soak_survives_sessions_and_daemon_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let cfg = SoakConfig {
        duration: Duration::from_secs(20),
        queues: 4,
        depth: 256,
        files: 8,
        file_size: 2 << 20,
        block_size: 64 << 10,
        seed: 9,
        destroy_every: Some(Duration::from_secs(5)),
        reconnect_every: Some(Duration::from_secs(10)),
        progress_every: Some(Duration::from_secs(10)),
        timeout: Duration::from_secs(30),
    };
    let started = AtomicUsize::new(0);
    let start_daemon = || {
        let socket = dir.path().join(format!(
            "vfs-{}.sock",
            started.fetch_add(1, Ordering::Relaxed)
        ));
        let mut cmd = Command::new(daemon_bin());
        cmd.arg("--shared-dir")
            .arg(&share)
            .arg("--socket-path")
            .arg(&socket);
        DaemonProcess::spawn(cmd, socket, Duration::from_secs(20))
    };
    let report = match soak::run(&cfg, &share, start_daemon) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    eprint!("{report}");
    let failures = report.failures(&Tolerance::default());
    assert!(failures.is_empty(), "{failures:#?}\n{report}");
    assert_eq!(report.lost_writes, 0);
    assert_eq!(report.corrupted_blocks, 0);
    assert!(report.bytes_verified_read > 0 && report.bytes_verified_host > 0);
    for op in SoakReport::OPS {
        assert!(
            report.ops.get(op).copied().unwrap_or(0) > 0,
            "{op} never ran:\n{report}"
        );
    }
    assert!(report.sessions >= 3, "{report}");
    assert!(report.daemons.len() >= 2, "{report}");
    assert!(
        report.abandoned_writes > 0,
        "no write was in flight at the disconnect:\n{report}"
    );
}
