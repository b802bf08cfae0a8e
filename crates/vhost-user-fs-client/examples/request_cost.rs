//! Sends N requests of one kind, one at a time, to a virtio-fs daemon, then ends the session
//! and disconnects (so the daemon exits by itself). `benches/instructions.sh` runs a daemon
//! under callgrind against it to count instructions per request, which unlike timings repeat
//! exactly from run to run.
//!
//! usage: request_cost SOCKET getattr|lookup|read4k|write4k N

use vhost_user_fs_client::abi::ROOT_ID;
use vhost_user_fs_client::{DeviceConfig, FsClient, FuseOps};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, socket, op, n] = &args[..] else {
        eprintln!("usage: request_cost SOCKET getattr|lookup|read4k|write4k N");
        std::process::exit(2);
    };
    let n: u64 = n.parse().expect("N: a number");
    let c = FsClient::connect(DeviceConfig::new(socket)).expect("connect");
    let init = c.init().expect("INIT");
    let file = c
        .create(
            ROOT_ID,
            "request-cost",
            (libc::O_CREAT | libc::O_RDWR) as u32,
            libc::S_IFREG | 0o644,
            0,
        )
        .or_else(|_| {
            let e = c.lookup(ROOT_ID, "request-cost")?;
            let o = c.open(e.nodeid, libc::O_RDWR as u32)?;
            Ok::<_, vhost_user_fs_client::Error>((e, o))
        })
        .expect("create the test file");
    let (node, fh) = (file.0.nodeid, file.1.fh);
    // 1 MiB in writes of at most max_write (which follows the queue size).
    let fill = vec![7u8; init.max_write as usize];
    let mut off = 0;
    while off < 1 << 20 {
        let len = fill.len().min((1 << 20) - off as usize);
        c.write(node, fh, off, &fill[..len]).expect("fill");
        off += len as u64;
    }
    let block = vec![1u8; 4096];
    for i in 0..n {
        let off = (i * 4096) % (1 << 20);
        let r = match op.as_str() {
            "getattr" => c.getattr(node, None).map(drop),
            "lookup" => c.lookup(ROOT_ID, "request-cost").map(drop),
            "read4k" => c.read(node, fh, off, 4096).map(drop),
            "write4k" => c.write(node, fh, off, &block).map(drop),
            other => {
                eprintln!("unknown request kind {other}");
                std::process::exit(2);
            }
        };
        r.expect("request");
    }
    c.release(node, fh, 0).expect("RELEASE");
    c.destroy().expect("DESTROY");
}
