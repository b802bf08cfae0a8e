//! Prints the command line of one daemon configuration, one word per line, binary first, as
//! `vhost_user_fs_client::daemons` defines it: scripts that start the daemons themselves
//! (`benches/guest-fio.sh`) take it from here so the definitions keep one home.
//!
//! usage: daemon_command DAEMON POOL SOCKET SHARE [EXTRA...]
//!   DAEMON: async-virtiofsd | c-virtiofsd | rust-virtiofsd
//!   POOL:   the benchmark's configuration `pool=POOL` (`--thread-pool-size`, cache=auto)
//!
//! Exit status 2 on bad arguments, 1 when the daemon's binary is not found (see
//! `Kind::candidates` for where it is looked for).

use std::path::Path;
use std::process::ExitCode;

use vhost_user_fs_client::daemons::{Kind, Options};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [daemon, pool, socket, share, extra @ ..] = args.as_slice() else {
        eprintln!("usage: daemon_command DAEMON POOL SOCKET SHARE [EXTRA...]");
        return ExitCode::from(2);
    };
    let Some(kind) = Kind::from_name(daemon) else {
        eprintln!("daemon_command: unknown daemon {daemon:?} (async-virtiofsd, c-virtiofsd, rust-virtiofsd)");
        return ExitCode::from(2);
    };
    let Ok(pool) = pool.parse::<u32>() else {
        eprintln!("daemon_command: POOL must be a number, got {pool:?}");
        return ExitCode::from(2);
    };
    let Some(bin) = kind.binary() else {
        eprintln!("daemon_command: no {daemon} binary found");
        return ExitCode::from(1);
    };
    let mut opts = Options::bench(pool);
    opts.extra = extra.to_vec();
    println!("{}", bin.display());
    for word in kind.args(Path::new(socket), Path::new(share), &opts) {
        println!("{word}");
    }
    ExitCode::SUCCESS
}
