//! The seed corpus: short sessions a Linux guest would send (INIT, then operations on real node
//! ids and handles), and a few hostile layouts. `examples/gen_seeds.rs` writes them to
//! `seeds/request_pipeline/`.

use fuse_backend_rs::abi::fuse_abi::*;
use vm_memory::ByteValued;

use crate::input::*;

/// Node selector for the `k`-th node id the server returned in this input (0-based).
const fn learned(k: u8) -> u8 {
    k + 1
}
const ROOT: u8 = 0;

fn op(opcode: Opcode, node: u8, args: Vec<u8>) -> Request {
    Request::new(opcode as u32, node, args)
}

fn bytes<T: ByteValued>(v: T) -> Vec<u8> {
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

/// With the `k`-th file handle written at the start of the arguments (or at offset 8).
fn with_fh(mut r: Request, k: u8, at8: bool) -> Request {
    r.flags |= FH;
    r.fh = k | if at8 { 0x80 } else { 0 };
    r
}

fn init_flags(ext: bool) -> u32 {
    let all = (FsOptions::all().bits() & 0xFFFF_FFFF) as u32;
    let ext_bit = FsOptions::INIT_EXT.bits() as u32;
    if ext {
        all
    } else {
        all & !ext_bit
    }
}

fn init() -> Request {
    op(
        Opcode::Init,
        ROOT,
        bytes(InitIn {
            major: 7,
            minor: 31,
            max_readahead: 0x2_0000,
            flags: init_flags(false),
        }),
    )
}

fn init_ext() -> Request {
    op(
        Opcode::Init,
        ROOT,
        cat(&[
            bytes(InitIn {
                major: 7,
                minor: 38,
                max_readahead: 0x2_0000,
                flags: init_flags(true),
            }),
            bytes(InitIn2 {
                flags2: 0xFFFF_FFFF,
                unused: [0; 11],
            }),
        ]),
    )
}

fn lookup(parent: u8, n: &str) -> Request {
    op(Opcode::Lookup, parent, name(n))
}

fn open(node: u8, flags: i32) -> Request {
    op(
        Opcode::Open,
        node,
        bytes(OpenIn {
            flags: flags as u32,
            fuse_flags: 0,
        }),
    )
}

fn read(opcode: Opcode, node: u8, fh: u8, offset: u64, size: u32) -> Request {
    with_fh(
        op(
            opcode,
            node,
            bytes(ReadIn {
                offset,
                size,
                ..Default::default()
            }),
        ),
        fh,
        false,
    )
}

fn release(opcode: Opcode, node: u8, fh: u8) -> Request {
    with_fh(op(opcode, node, bytes(ReleaseIn::default())), fh, false)
}

fn getattr(node: u8) -> Request {
    op(Opcode::Getattr, node, bytes(GetattrIn::default()))
}

fn forget(node: u8, nlookup: u64) -> Request {
    op(Opcode::Forget, node, bytes(ForgetIn { nlookup }))
}

fn create(parent: u8, n: &str) -> Request {
    op(
        Opcode::Create,
        parent,
        cat(&[
            bytes(CreateIn {
                flags: (libc::O_RDWR | libc::O_CREAT) as u32,
                mode: libc::S_IFREG | 0o644,
                umask: 0o022,
                fuse_flags: 0,
            }),
            name(n),
        ]),
    )
}

fn write(node: u8, fh: u8, offset: u64, data: &[u8]) -> Request {
    with_fh(
        op(
            Opcode::Write,
            node,
            cat(&[
                bytes(WriteIn {
                    offset,
                    size: data.len() as u32,
                    ..Default::default()
                }),
                data.to_vec(),
            ]),
        ),
        fh,
        false,
    )
}

fn setattr(node: u8, s: SetattrIn) -> Request {
    op(Opcode::Setattr, node, bytes(s))
}

fn mkdir(parent: u8, n: &str) -> Request {
    op(
        Opcode::Mkdir,
        parent,
        cat(&[
            bytes(MkdirIn {
                mode: 0o755,
                umask: 0o022,
            }),
            name(n),
        ]),
    )
}

/// A layout: readable pieces, writable pieces (empty: none).
fn laid_out(mut r: Request, readable: &[u16], writable: &[u16]) -> Request {
    r.readable = readable.to_vec();
    if writable.is_empty() {
        r.nwrite = WRITE_NONE;
    } else {
        r.nwrite = writable.len() as u8;
        r.writable = writable.to_vec();
    }
    r
}

fn session(options: u8, requests: Vec<Request>) -> Input {
    Input { options, requests }
}

/// Every seed, by file name.
pub fn all() -> Vec<(&'static str, Input)> {
    let file = learned(0);
    vec![
        ("init", session(1, vec![init()])),
        (
            "lookup-open-read",
            session(
                1,
                vec![
                    init(),
                    lookup(ROOT, "file"),
                    open(file, libc::O_RDONLY),
                    read(Opcode::Read, file, 0, 0, 4096),
                    getattr(file),
                    release(Opcode::Release, file, 0),
                    forget(file, 1),
                ],
            ),
        ),
        (
            "readdir",
            session(
                0,
                vec![
                    init(),
                    lookup(ROOT, "dir"),
                    op(
                        Opcode::Opendir,
                        file,
                        bytes(OpenIn {
                            flags: (libc::O_RDONLY | libc::O_DIRECTORY) as u32,
                            fuse_flags: 0,
                        }),
                    ),
                    read(Opcode::Readdir, file, 0, 0, 4096),
                    read(Opcode::Readdirplus, file, 0, 0, 4096),
                    release(Opcode::Releasedir, file, 0),
                    op(
                        Opcode::Opendir,
                        ROOT,
                        bytes(OpenIn {
                            flags: (libc::O_RDONLY | libc::O_DIRECTORY) as u32,
                            fuse_flags: 0,
                        }),
                    ),
                    read(Opcode::Readdirplus, ROOT, 1, 0, 4096),
                    lookup(file, "nested"),
                ],
            ),
        ),
        (
            "create-write-truncate",
            session(
                2 | 8,
                vec![
                    init(),
                    create(ROOT, "new"),
                    write(file, 0, 0, b"hello again\n"),
                    with_fh(op(Opcode::Fsync, file, bytes(FsyncIn::default())), 0, false),
                    read(Opcode::Read, file, 0, 0, 64),
                    setattr(
                        file,
                        SetattrIn {
                            valid: 1 << 3, // FATTR_SIZE
                            size: 3,
                            ..Default::default()
                        },
                    ),
                    setattr(
                        file,
                        SetattrIn {
                            valid: 1 | (1 << 4) | (1 << 5), // mode, atime, mtime
                            mode: 0o4755,
                            atime: 1,
                            mtime: 2,
                            ..Default::default()
                        },
                    ),
                    getattr(file),
                    with_fh(op(Opcode::Flush, file, bytes(FlushIn::default())), 0, false),
                    with_fh(
                        op(
                            Opcode::Fallocate,
                            file,
                            bytes(FallocateIn {
                                offset: 0,
                                length: 8192,
                                ..Default::default()
                            }),
                        ),
                        0,
                        false,
                    ),
                    with_fh(
                        op(
                            Opcode::Lseek,
                            file,
                            bytes(LseekIn {
                                whence: 3, // SEEK_DATA
                                ..Default::default()
                            }),
                        ),
                        0,
                        false,
                    ),
                    release(Opcode::Release, file, 0),
                    op(Opcode::Unlink, ROOT, name("new")),
                ],
            ),
        ),
        (
            "namespace",
            session(
                3,
                vec![
                    init(),
                    mkdir(ROOT, "d2"),
                    op(
                        Opcode::Symlink,
                        learned(0),
                        cat(&[name("ln"), name("../file")]),
                    ),
                    op(Opcode::Readlink, learned(1), vec![]),
                    lookup(ROOT, "file"),
                    op(
                        Opcode::Link,
                        learned(0),
                        cat(&[bytes(LinkIn { oldnodeid: 4 }), name("hard")]),
                    ),
                    op(
                        Opcode::Rename,
                        ROOT,
                        cat(&[bytes(RenameIn { newdir: 2 }), name("file"), name("moved")]),
                    ),
                    op(
                        Opcode::Rename2,
                        learned(0),
                        cat(&[
                            bytes(Rename2In {
                                newdir: 1,
                                flags: 2, // RENAME_EXCHANGE
                                padding: 0,
                            }),
                            name("moved"),
                            name("dir"),
                        ]),
                    ),
                    op(
                        Opcode::Mknod,
                        ROOT,
                        cat(&[
                            bytes(MknodIn {
                                mode: libc::S_IFIFO | 0o644,
                                rdev: 0,
                                umask: 0,
                                padding: 0,
                            }),
                            name("fifo"),
                        ]),
                    ),
                    open(learned(3), libc::O_RDONLY),
                    op(Opcode::Unlink, learned(0), name("ln")),
                    op(Opcode::Rmdir, ROOT, name("d2")),
                ],
            ),
        ),
        (
            "escape-attempts",
            session(
                1,
                vec![
                    init(),
                    lookup(ROOT, "esc"),
                    op(Opcode::Readlink, learned(0), vec![]),
                    open(learned(0), libc::O_RDWR | libc::O_TRUNC),
                    lookup(ROOT, ".."),
                    lookup(ROOT, "escdir"),
                    lookup(ROOT, "abs"),
                    lookup(ROOT, "dir/nested"),
                    lookup(ROOT, "/etc"),
                    create(ROOT, "esc"),
                    op(
                        Opcode::Link,
                        ROOT,
                        cat(&[bytes(LinkIn { oldnodeid: 2 }), name("hardesc")]),
                    ),
                    setattr(
                        learned(0),
                        SetattrIn {
                            valid: 1 | (1 << 3),
                            mode: 0o777,
                            size: 0,
                            ..Default::default()
                        },
                    ),
                    op(
                        Opcode::Rename,
                        ROOT,
                        cat(&[bytes(RenameIn { newdir: 1 }), name("escdir"), name("..")]),
                    ),
                ],
            ),
        ),
        (
            "xattr-statfs-access",
            session(
                1 | 4,
                vec![
                    init(),
                    lookup(ROOT, "file"),
                    op(
                        Opcode::Setxattr,
                        file,
                        cat(&[
                            bytes(SetxattrIn { size: 5, flags: 0 }),
                            name("user.fuzz"),
                            b"value".to_vec(),
                        ]),
                    ),
                    op(
                        Opcode::Getxattr,
                        file,
                        cat(&[
                            bytes(GetxattrIn {
                                size: 64,
                                padding: 0,
                            }),
                            name("user.fuzz"),
                        ]),
                    ),
                    op(
                        Opcode::Listxattr,
                        file,
                        bytes(GetxattrIn {
                            size: 0,
                            padding: 0,
                        }),
                    ),
                    op(Opcode::Removexattr, file, name("user.fuzz")),
                    op(Opcode::Statfs, ROOT, vec![]),
                    op(
                        Opcode::Access,
                        file,
                        bytes(AccessIn {
                            mask: 4,
                            padding: 0,
                        }),
                    ),
                    {
                        let mut r = op(
                            Opcode::Access,
                            file,
                            bytes(AccessIn {
                                mask: 2,
                                padding: 0,
                            }),
                        );
                        r.flags |= UNPRIVILEGED;
                        r
                    },
                ],
            ),
        ),
        (
            "destroy-reinit",
            session(
                1,
                vec![
                    init_ext(),
                    lookup(ROOT, "file"),
                    op(Opcode::Destroy, ROOT, vec![]),
                    getattr(ROOT),
                    init(),
                    init(),
                    getattr(ROOT),
                    op(
                        Opcode::BatchForget,
                        ROOT,
                        cat(&[
                            bytes(BatchForgetIn { count: 2, dummy: 0 }),
                            bytes(ForgetOne {
                                nodeid: 2,
                                nlookup: 1,
                            }),
                            bytes(ForgetOne {
                                nodeid: 99,
                                nlookup: 1,
                            }),
                        ]),
                    ),
                    op(Opcode::Interrupt, ROOT, bytes(InterruptIn { unique: 1 })),
                ],
            ),
        ),
        (
            "layouts",
            session(
                1,
                vec![
                    laid_out(init(), &[1, 1, 1, 5, 0, 7, 100], &[3, 0, 13, 80]),
                    {
                        let mut r = laid_out(lookup(ROOT, "file"), &[40, 5], &[16, 16, 200]);
                        r.flags |= INDIRECT;
                        r
                    },
                    laid_out(
                        read(Opcode::Read, file, 0, 0, 64),
                        &[],
                        &[16, 8, 8, 8, 8, 8, 8, 8],
                    ),
                    laid_out(getattr(file), &[], &[]),
                    laid_out(getattr(file), &[], &[8]),
                    laid_out(getattr(file), &[], &[16]),
                    {
                        let mut r = getattr(file);
                        r.flags |= SPECIAL_R;
                        r.special_r = Special {
                            kind: 1,
                            at: 0,
                            value: 20,
                        };
                        r
                    },
                    {
                        let mut r = getattr(file);
                        r.flags |= SPECIAL_W;
                        r.special_w = Special {
                            kind: 0,
                            at: 0,
                            value: 0xFFFF_FFFF_FFFF_FF00,
                        };
                        r
                    },
                ],
            ),
        ),
        (
            "malformed",
            session(
                1,
                vec![
                    init(),
                    {
                        let mut r = getattr(ROOT);
                        r.flags |= DROP_TAIL;
                        r.readable = vec![20];
                        r
                    },
                    {
                        let mut r = getattr(ROOT);
                        r.flags |= LEN_DELTA;
                        r.len_delta = 1;
                        r
                    },
                    {
                        let mut r = getattr(ROOT);
                        r.flags |= LEN_DELTA;
                        r.len_delta = -20;
                        r
                    },
                    {
                        let mut r = lookup(ROOT, "file");
                        r.flags |= LEN_DELTA;
                        r.len_delta = -3; // name without its NUL
                        r
                    },
                    Request::new(7, ROOT, vec![]),
                    Request::new(19, ROOT, vec![]),
                    Request::new(0, ROOT, vec![]),
                    Request::new(4096, ROOT, vec![]),
                    Request::new(Opcode::CopyFileRange as u32, ROOT, vec![0; 56]),
                    Request::new(Opcode::SetupMapping as u32, ROOT, vec![0; 40]),
                    {
                        let mut r = Request::new(0, ROOT, vec![0; 8]);
                        r.flags |= RAW;
                        r
                    },
                ],
            ),
        ),
        (
            "before-init",
            session(
                1,
                vec![
                    getattr(ROOT),
                    forget(ROOT, 1),
                    op(Opcode::Destroy, ROOT, vec![]),
                    op(
                        Opcode::Init,
                        ROOT,
                        bytes(InitIn {
                            major: 8,
                            minor: 0,
                            max_readahead: 0,
                            flags: 0,
                        }),
                    ),
                    init(),
                    getattr(ROOT),
                ],
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn seeds_run_clean() {
        for (name, input) in super::all() {
            eprintln!("seed {name}");
            crate::run_request_pipeline(&input.encode());
        }
    }
}
