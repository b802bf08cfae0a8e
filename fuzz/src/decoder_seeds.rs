//! The `fuse_decoder` seed corpus: one seed per opcode 0..=53 (after an INIT offering what
//! Linux 6.12 does, except where the opcode is INIT itself) with a well-formed body, and a few
//! sessions: an old guest, requests before INIT, layouts, bent segments, malformed requests,
//! filesystem errors. `examples/gen_seeds.rs` writes them to `seeds/fuse_decoder/`.
//!
//! The bodies are written with fuse-backend-rs's ABI structs, a definition of the wire format
//! independent of the one under test (`virtiofs_fuse::abi`); that one is used only for what
//! fuse-backend-rs 0.14 lacks (the 64-byte INIT, SETXATTR_EXT's layout, SYNCFS, STATX).

use fuse_backend_rs::abi::fuse_abi as fbr;
use fuse_backend_rs::abi::virtio_fs as fbr_virtio;
use virtiofs_fuse::abi::{self, init_flags as f, Opcode};
use vm_memory::ByteValued;

use crate::decoder_input::*;

/// The INIT flags a Linux 6.12 guest offers (what `tests/server.rs` uses too), and a few more.
pub const LINUX_FLAGS: u64 = f::ASYNC_READ
    | f::POSIX_LOCKS
    | f::ATOMIC_O_TRUNC
    | f::EXPORT_SUPPORT
    | f::BIG_WRITES
    | f::DONT_MASK
    | f::FLOCK_LOCKS
    | f::DO_READDIRPLUS
    | f::READDIRPLUS_AUTO
    | f::PARALLEL_DIROPS
    | f::MAX_PAGES
    | f::SUBMOUNTS
    | f::SETXATTR_EXT
    | f::INIT_EXT
    | f::CREATE_SUPP_GROUP
    | f::MAP_ALIGNMENT
    | f::HAS_INODE_DAX
    | f::WRITEBACK_CACHE
    | f::POSIX_ACL;

fn b<T: ByteValued>(v: T) -> Vec<u8> {
    v.as_slice().to_vec()
}

fn name(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn req(op: Opcode, args: Vec<u8>) -> Request<'static> {
    Request::new(op as u32, args)
}

/// A session configuration: INIT at protocol 7.45 offering `flags`, filesystem wanting all.
fn linux() -> Config {
    Config {
        cfg: CFG_INIT,
        minor: 45,
        flags: LINUX_FLAGS,
    }
}

fn read_in(size: u32) -> Vec<u8> {
    b(fbr::ReadIn {
        fh: 3,
        offset: 0,
        size,
        ..Default::default()
    })
}

fn lk() -> Vec<u8> {
    b(fbr::LkIn {
        fh: 3,
        owner: 0x1234,
        lk: fbr::FileLock {
            start: 0,
            end: u64::MAX,
            type_: libc::F_WRLCK as u32,
            pid: 42,
        },
        lk_flags: 0,
        padding: 0,
    })
}

fn init_in(major: u32, minor: u32, flags: u64) -> Vec<u8> {
    b(abi::InitIn {
        major,
        minor,
        max_readahead: 0x2_0000,
        flags: flags as u32,
        flags2: (flags >> 32) as u32,
        ..Default::default()
    })
}

/// A well-formed body for `opcode` as a Linux guest sends it (after INIT with
/// [`LINUX_FLAGS`]: SETXATTR_EXT is agreed).
pub fn well_formed(opcode: u32) -> Vec<u8> {
    let Some(op) = Opcode::from_u32(opcode) else {
        return Vec::new();
    };
    match op {
        Opcode::Lookup | Opcode::Unlink | Opcode::Rmdir => name("file"),
        Opcode::Forget => b(fbr::ForgetIn { nlookup: 1 }),
        Opcode::Getattr => b(fbr::GetattrIn::default()),
        Opcode::Setattr => b(fbr::SetattrIn {
            valid: 1 | (1 << 3), // FATTR_MODE | FATTR_SIZE
            mode: 0o100644,
            size: 4096,
            ..Default::default()
        }),
        Opcode::Readlink | Opcode::Statfs | Opcode::Destroy => Vec::new(),
        Opcode::Symlink => cat(&[name("link"), name("../target")]),
        Opcode::Mknod => cat(&[
            b(fbr::MknodIn {
                mode: libc::S_IFIFO | 0o644,
                rdev: 0,
                umask: 0o022,
                padding: 0,
            }),
            name("fifo"),
        ]),
        Opcode::Mkdir => cat(&[
            b(fbr::MkdirIn {
                mode: 0o755,
                umask: 0o022,
            }),
            name("dir"),
        ]),
        Opcode::Rename => cat(&[b(fbr::RenameIn { newdir: 1 }), name("a"), name("b")]),
        Opcode::Rename2 => cat(&[
            b(fbr::Rename2In {
                newdir: 1,
                flags: libc::RENAME_NOREPLACE,
                padding: 0,
            }),
            name("a"),
            name("b"),
        ]),
        Opcode::Link => cat(&[b(fbr::LinkIn { oldnodeid: 2 }), name("hard")]),
        Opcode::Open | Opcode::Opendir => b(fbr::OpenIn {
            flags: libc::O_RDONLY as u32,
            fuse_flags: 0,
        }),
        Opcode::Read | Opcode::Readdir | Opcode::Readdirplus => read_in(4096),
        Opcode::Write => cat(&[
            b(fbr::WriteIn {
                fh: 3,
                offset: 0,
                size: 12,
                ..Default::default()
            }),
            b"hello world\n".to_vec(),
        ]),
        Opcode::Release | Opcode::Releasedir => b(fbr::ReleaseIn {
            fh: 3,
            flags: libc::O_RDONLY as u32,
            release_flags: 0,
            lock_owner: 0,
        }),
        Opcode::Fsync | Opcode::Fsyncdir => b(fbr::FsyncIn {
            fh: 3,
            fsync_flags: 1,
            padding: 0,
        }),
        // SETXATTR_EXT's 16-byte layout (fuse-backend-rs 0.14 has only the 8-byte one).
        Opcode::Setxattr => cat(&[
            b(abi::SetxattrIn {
                size: 5,
                flags: 0,
                setxattr_flags: 0,
                padding: 0,
            }),
            name("user.fuzz"),
            b"value".to_vec(),
        ]),
        Opcode::Getxattr => cat(&[
            b(fbr::GetxattrIn {
                size: 64,
                padding: 0,
            }),
            name("user.fuzz"),
        ]),
        Opcode::Listxattr => b(fbr::GetxattrIn {
            size: 4096,
            padding: 0,
        }),
        Opcode::Removexattr => name("user.fuzz"),
        Opcode::Flush => b(fbr::FlushIn {
            fh: 3,
            unused: 0,
            padding: 0,
            lock_owner: 0x1234,
        }),
        Opcode::Init => init_in(7, 45, LINUX_FLAGS),
        Opcode::Getlk | Opcode::Setlk | Opcode::Setlkw => lk(),
        Opcode::Access => b(fbr::AccessIn {
            mask: libc::R_OK as u32,
            padding: 0,
        }),
        Opcode::Create => cat(&[
            b(fbr::CreateIn {
                flags: (libc::O_RDWR | libc::O_CREAT) as u32,
                mode: libc::S_IFREG | 0o644,
                umask: 0o022,
                fuse_flags: 0,
            }),
            name("new"),
        ]),
        // The kernel sends "/" as the name; the server ignores it.
        Opcode::Tmpfile => cat(&[
            b(fbr::CreateIn {
                flags: (libc::O_RDWR | libc::O_TMPFILE) as u32,
                mode: libc::S_IFREG | 0o600,
                umask: 0o022,
                fuse_flags: 0,
            }),
            name("/"),
        ]),
        Opcode::Interrupt => b(fbr::InterruptIn { unique: 1 }),
        Opcode::Bmap => b(fbr::BmapIn {
            block: 0,
            blocksize: 4096,
            padding: 0,
        }),
        Opcode::Ioctl => cat(&[
            b(fbr::IoctlIn {
                fh: 3,
                flags: 0,
                cmd: 0x8008_6601, // FS_IOC_GETFLAGS
                arg: 0x7fff_0000,
                in_size: 8,
                out_size: 8,
            }),
            vec![0; 8],
        ]),
        Opcode::Poll => b(fbr::PollIn {
            fh: 3,
            kh: 9,
            flags: 1,
            events: libc::POLLIN as u32,
        }),
        Opcode::NotifyReply => cat(&[
            b(fbr::NotifyRetrieveIn {
                offset: 0,
                size: 4,
                ..Default::default()
            }),
            b"data".to_vec(),
        ]),
        Opcode::BatchForget => cat(&[
            b(fbr::BatchForgetIn { count: 2, dummy: 0 }),
            b(fbr::ForgetOne {
                nodeid: 2,
                nlookup: 1,
            }),
            b(fbr::ForgetOne {
                nodeid: 3,
                nlookup: 5,
            }),
        ]),
        Opcode::Fallocate => b(fbr::FallocateIn {
            fh: 3,
            offset: 0,
            length: 8192,
            mode: 0,
            padding: 0,
        }),
        Opcode::Lseek => b(fbr::LseekIn {
            fh: 3,
            offset: 0,
            whence: 3, // SEEK_DATA
            padding: 0,
        }),
        Opcode::CopyFileRange | Opcode::CopyFileRange64 => b(fbr::CopyFileRangeIn {
            fh_in: 3,
            offset_in: 0,
            nodeid_out: 2,
            fh_out: 4,
            offset_out: 0,
            len: 1 << 33,
            flags: 0,
        }),
        Opcode::SetupMapping => b(fbr_virtio::SetupmappingIn {
            fh: 3,
            foffset: 0,
            len: 0x20_0000,
            flags: 1,
            moffset: 0,
        }),
        Opcode::RemoveMapping => cat(&[
            b(fbr_virtio::RemovemappingIn { count: 1 }),
            b(fbr_virtio::RemovemappingOne {
                moffset: 0,
                len: 0x20_0000,
            }),
        ]),
        Opcode::Syncfs => b(abi::SyncfsIn { padding: 0 }),
        Opcode::Statx => b(abi::StatxIn {
            getattr_flags: 0,
            reserved: 0,
            fh: 0,
            sx_flags: 0,
            sx_mask: 0xfff,
        }),
    }
}

fn ctl(mut r: Request<'static>, bits: u8) -> Request<'static> {
    r.ctl |= bits;
    r
}

fn answer(r: Request<'static>, answer: u8, size: u8) -> Request<'static> {
    let mut r = ctl(r, ANSWER);
    r.answer = answer;
    r.size = size;
    r
}

fn layout(r: Request<'static>, rsplit: u8, wsplit: u8, wsize: u16) -> Request<'static> {
    let mut r = ctl(r, LAYOUT);
    r.rsplit = rsplit;
    r.wsplit = wsplit;
    r.wsize = wsize;
    r
}

fn bend(r: Request<'static>, kind: u8, at: u8, value: u32) -> Request<'static> {
    let mut r = ctl(r, BEND);
    r.bend = Bend { kind, at, value };
    r
}

fn len_delta(r: Request<'static>, delta: i16) -> Request<'static> {
    let mut r = ctl(r, LEN);
    r.len_delta = delta;
    r
}

fn extlen(r: Request<'static>, n: u16) -> Request<'static> {
    let mut r = ctl(r, EXT);
    r.extlen = n;
    r
}

fn op_name(opcode: u32) -> String {
    match Opcode::from_u32(opcode) {
        Some(op) => format!("{op:?}").to_lowercase(),
        None => "unused".into(),
    }
}

/// Every seed, by file name, encoded.
pub fn all() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for opcode in 0..=53u32 {
        let r = Request::new(opcode, well_formed(opcode));
        let config = if opcode == Opcode::Init as u32 {
            Config::default() // the INIT is the request
        } else {
            linux()
        };
        seeds.push((
            format!("op-{opcode:02}-{}", op_name(opcode)),
            encode(&config, &[r]),
        ));
    }
    let w = |op: Opcode| req(op, well_formed(op as u32));
    let sessions: Vec<(&str, Config, Vec<Request<'static>>)> = vec![
        (
            "session-linux",
            linux(),
            vec![
                w(Opcode::Lookup),
                w(Opcode::Getattr),
                w(Opcode::Open),
                w(Opcode::Read),
                w(Opcode::Write),
                w(Opcode::Flush),
                w(Opcode::Release),
                w(Opcode::Opendir),
                w(Opcode::Readdirplus),
                w(Opcode::Releasedir),
                w(Opcode::Forget),
                w(Opcode::Destroy),
            ],
        ),
        (
            // A 5.4 guest: protocol 7.31, no INIT_EXT (so no SETXATTR_EXT: 8-byte SETXATTR),
            // the 16-byte fuse_init_in, a filesystem that wants only what the guest offers.
            "session-old-guest",
            Config {
                cfg: CFG_INIT | CFG_INIT_COMPAT | 3 << CFG_FS_SHIFT,
                minor: 31,
                flags: LINUX_FLAGS & 0xFFFF_FFFF & !f::INIT_EXT & !f::SETXATTR_EXT,
            },
            vec![
                req(
                    Opcode::Setxattr,
                    cat(&[
                        b(fbr::SetxattrIn { size: 3, flags: 0 }),
                        name("user.a"),
                        b"xyz".to_vec(),
                    ]),
                ),
                w(Opcode::Getxattr),
                w(Opcode::Listxattr),
                w(Opcode::Readdir),
                w(Opcode::Write),
            ],
        ),
        (
            "before-init",
            Config::default(),
            vec![
                w(Opcode::Lookup),
                w(Opcode::Forget),
                w(Opcode::Destroy),
                req(Opcode::Init, init_in(8, 0, 0)),
                req(Opcode::Init, init_in(7, 26, LINUX_FLAGS)),
                req(Opcode::Init, init_in(7, 45, LINUX_FLAGS)[..8].to_vec()),
                w(Opcode::Init),
                w(Opcode::Lookup),
                w(Opcode::Init),
                w(Opcode::Getattr),
            ],
        ),
        (
            // INITs in a live session: refused (short), accepted (a new driver), a newer major
            // (the session ends, no new one), an old minor (EPROTO, the session ends).
            "init-in-live-session",
            linux(),
            vec![
                req(Opcode::Init, init_in(7, 45, LINUX_FLAGS)[..12].to_vec()),
                w(Opcode::Getattr),
                w(Opcode::Init),
                w(Opcode::Getattr),
                req(Opcode::Init, init_in(8, 0, 0)),
                w(Opcode::Getattr),
                w(Opcode::Init),
                req(Opcode::Init, init_in(7, 20, LINUX_FLAGS)),
                w(Opcode::Getattr),
            ],
        ),
        (
            "init-major8-then-7",
            Config {
                cfg: CFG_INIT | CFG_INIT_MAJOR8,
                minor: 0,
                flags: LINUX_FLAGS,
            },
            vec![w(Opcode::Getattr), w(Opcode::Init), w(Opcode::Getattr)],
        ),
        (
            "init-fs-fails",
            Config {
                cfg: CFG_INIT | 2 << CFG_FS_SHIFT,
                minor: 45,
                flags: LINUX_FLAGS,
            },
            vec![w(Opcode::Getattr)],
        ),
        (
            // max_pages 1: max_write 4096; the filesystem agrees to nothing of its own.
            "small-max-write",
            Config {
                cfg: CFG_INIT | 1 << CFG_FS_SHIFT | 1 << CFG_PAGES_SHIFT,
                minor: 45,
                flags: LINUX_FLAGS,
            },
            vec![
                req(
                    Opcode::Write,
                    cat(&[
                        b(fbr::WriteIn {
                            size: 4097,
                            ..Default::default()
                        }),
                        vec![0x77; 4097],
                    ]),
                ),
                req(
                    Opcode::Write,
                    cat(&[
                        b(fbr::WriteIn {
                            size: 4096,
                            ..Default::default()
                        }),
                        vec![0x77; 4096],
                    ]),
                ),
            ],
        ),
        (
            "fs-answers",
            linux(),
            vec![
                answer(w(Opcode::Lookup), ANSWER_ERR, 0),
                answer(w(Opcode::Getattr), ANSWER_ERR | 8, 0),
                answer(w(Opcode::Read), ANSWER_OVERCLAIM, 0),
                answer(w(Opcode::Write), ANSWER_OVERCLAIM, 0),
                answer(w(Opcode::CopyFileRange), ANSWER_OVERCLAIM, 0),
                answer(w(Opcode::Readdir), 0, 200),
                answer(w(Opcode::Readdirplus), 0, 40),
                answer(w(Opcode::Readdir), ANSWER_EMPTY_DIR, 0),
                answer(w(Opcode::Getxattr), ANSWER_XATTR_SIZE, 10),
                answer(w(Opcode::Getxattr), ANSWER_BIG, 10),
                answer(w(Opcode::Listxattr), 0, 255),
                answer(w(Opcode::Readlink), ANSWER_BIG, 255),
                answer(w(Opcode::Ioctl), ANSWER_BIG, 1),
                answer(w(Opcode::Statfs), ANSWER_ERR | 7, 0),
            ],
        ),
        (
            "layouts",
            linux(),
            vec![
                layout(w(Opcode::Lookup), 1, 1, 200),
                layout(w(Opcode::Getattr), 7 | SPLIT_ZEROS, 5 | SPLIT_ZEROS, 300),
                layout(w(Opcode::Write), 13, SPLIT_ODD | 3, 64),
                layout(
                    req(
                        Opcode::Read,
                        b(fbr::ReadIn {
                            size: 1 << 20,
                            ..Default::default()
                        }),
                    ),
                    0,
                    9,
                    WSIZE_BIG,
                ),
                layout(w(Opcode::Getattr), 0, 0, 0),
                layout(w(Opcode::Getattr), 0, 0, 8),
                layout(w(Opcode::Getattr), 0, 0, 16),
                layout(w(Opcode::Getattr), 20 | SPLIT_ODD, 0, 4096),
                layout(w(Opcode::Readdirplus), 0, 63, 1000),
                layout(w(Opcode::Forget), 1 | SPLIT_ZEROS, 0, 0),
            ],
        ),
        (
            "bends",
            linux(),
            vec![
                bend(w(Opcode::Lookup), 0, 0, 3),
                bend(w(Opcode::Lookup), 1, 0, 0),
                bend(w(Opcode::Write), 2, 0, 0),
                bend(layout(w(Opcode::Write), 8, 0, 4096), 3, 3, 1 << 20),
                bend(w(Opcode::Getattr), 4, 0, 8),
                bend(w(Opcode::Getattr), 5, 0, 0),
                bend(w(Opcode::Read), 6, 0, 0),
                bend(layout(w(Opcode::Read), 0, 8, 4096), 7, 1, u32::MAX),
            ],
        ),
        (
            "malformed",
            linux(),
            vec![
                len_delta(w(Opcode::Getattr), 1),
                len_delta(w(Opcode::Getattr), -1),
                len_delta(w(Opcode::Getattr), -16),
                len_delta(w(Opcode::Getattr), -30),
                len_delta(w(Opcode::Lookup), -1), // the name without its NUL
                extlen(w(Opcode::Getattr), 3),
                extlen(w(Opcode::Getattr), u16::MAX),
                req(Opcode::Lookup, vec![b'x'; 300]),
                req(Opcode::Lookup, cat(&[vec![b'x'; 256], vec![0]])),
                req(Opcode::Symlink, name("no-target")),
                req(
                    Opcode::Write,
                    cat(&[
                        b(fbr::WriteIn {
                            size: 100,
                            ..Default::default()
                        }),
                        vec![0; 50],
                    ]),
                ),
                req(
                    Opcode::Setxattr,
                    cat(&[
                        b(abi::SetxattrIn {
                            size: 70_000,
                            ..Default::default()
                        }),
                        name("user.big"),
                    ]),
                ),
                req(
                    Opcode::Ioctl,
                    b(fbr::IoctlIn {
                        flags: 2, // FUSE_IOCTL_UNRESTRICTED
                        in_size: 1 << 20,
                        ..Default::default()
                    }),
                ),
                Request::new(54, vec![]),
                Request::new(4096, vec![]),
                Request::new(u32::MAX, vec![0; 16]),
            ],
        ),
        (
            // MKDIR with the supplementary-group extension (CREATE_SUPP_GROUP agreed), a
            // truncated extension and an unknown one.
            "supp-group",
            linux(),
            vec![
                extlen(
                    req(
                        Opcode::Mkdir,
                        cat(&[
                            well_formed(Opcode::Mkdir as u32),
                            b(abi::ExtHeader {
                                size: 16,
                                typ: abi::ext::GROUPS,
                            }),
                            1u32.to_le_bytes().to_vec(),
                            4242u32.to_le_bytes().to_vec(),
                        ]),
                    ),
                    2,
                ),
                extlen(
                    req(
                        Opcode::Create,
                        cat(&[
                            well_formed(Opcode::Create as u32),
                            b(abi::ExtHeader {
                                size: 24,
                                typ: abi::ext::GROUPS,
                            }),
                            1u32.to_le_bytes().to_vec(),
                        ]),
                    ),
                    2,
                ),
                extlen(
                    req(
                        Opcode::Mknod,
                        cat(&[
                            well_formed(Opcode::Mknod as u32),
                            b(abi::ExtHeader { size: 8, typ: 7 }),
                        ]),
                    ),
                    1,
                ),
            ],
        ),
    ];
    for (n, config, reqs) in sessions {
        // An input holds at most MAX_REQUESTS: longer sessions become several seeds.
        let chunks: Vec<_> = reqs.chunks(MAX_REQUESTS).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let name = if chunks.len() == 1 {
                n.to_string()
            } else {
                format!("{n}-{}", i + 1)
            };
            seeds.push((name, encode(&config, chunk)));
        }
    }
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::run_fuse_decoder_logged;

    /// Each opcode's seed is answered as a well-formed request of that opcode is: success,
    /// except where the server refuses the opcode itself.
    #[test]
    fn every_opcode_has_a_seed_its_server_accepts() {
        let seeds = all();
        for opcode in 0..=53u32 {
            let prefix = format!("op-{opcode:02}-");
            let (_, bytes) = seeds
                .iter()
                .find(|(n, _)| n.starts_with(&prefix))
                .expect("a seed per opcode");
            let log = run_fuse_decoder_logged(bytes);
            let last = log.last().unwrap();
            assert_eq!(last.opcode, Some(opcode));
            if opcode != Opcode::Init as u32 {
                assert_eq!(log.len(), 2, "INIT and the request");
                assert_eq!(log[0].errno, Some(0), "INIT");
            }
            let (errno, replies) = match Opcode::from_u32(opcode) {
                None => (libc::ENOSYS, true),
                Some(Opcode::Forget | Opcode::BatchForget | Opcode::NotifyReply) => (0, false),
                Some(
                    Opcode::Interrupt | Opcode::Bmap | Opcode::SetupMapping | Opcode::RemoveMapping,
                ) => (libc::ENOSYS, true),
                Some(_) => (0, true),
            };
            assert_eq!(last.errno, Some(errno), "opcode {opcode}");
            assert_eq!(last.written > 0, replies, "opcode {opcode}");
        }
    }

    #[test]
    fn every_seed_runs_clean() {
        for (n, bytes) in all() {
            eprintln!("seed {n}");
            let log = run_fuse_decoder_logged(&bytes);
            assert!(!log.is_empty());
        }
    }
}
