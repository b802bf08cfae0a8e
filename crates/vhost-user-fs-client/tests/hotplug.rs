//! Memory hot-add while the guest does I/O (QEMU: `object-add memory-backend-memfd` +
//! `device_add pc-dimm`, which reaches the backend as ADD_MEM_REG, or as a new SET_MEM_TABLE
//! when CONFIGURE_MEM_SLOTS is not negotiated): requests already running keep working, and
//! requests whose buffers lie in the new memory are served.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::Daemon;
use vhost_user_fs_client::abi::{opcode, InHeader, OutHeader, ReadIn, WriteIn, WriteOut, ROOT_ID};
use vhost_user_fs_client::{FuseOps, RawChain, ReadPart, WritePart};
use vm_memory::{ByteValued, GuestAddress};

const CREATE_EXCL: u32 = (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) as u32;
const S_IFREG: u32 = libc::S_IFREG;

fn in_header(len: usize, opcode: u32, unique: u64, nodeid: u64) -> InHeader {
    InHeader {
        len: len as u32,
        opcode,
        unique,
        nodeid,
        pid: std::process::id(),
        ..Default::default()
    }
}

#[test]
fn memory_hot_added_under_io_serves_requests_in_it() {
    for add_mem_reg in [true, false] {
        let mut d = Daemon::start(&["--thread-pool-size", "16"]);
        let mut cfg = d.config();
        cfg.request_queues = 2;
        cfg.memory_regions = vec![32 << 20];
        cfg.hotplug_regions = vec![16 << 20, 16 << 20];
        cfg.add_mem_reg = add_mem_reg;
        let c = d.connect(cfg);
        assert_eq!(c.device().negotiated().max_mem_slots.is_some(), add_mem_reg);
        c.init().unwrap();
        let (e, o) = c
            .create(ROOT_ID, "f", CREATE_EXCL, S_IFREG | 0o644, 0)
            .unwrap();
        let stop = AtomicBool::new(false);
        let ops = AtomicU64::new(0);
        let added = std::thread::scope(|s| {
            // Two writers/readers, each on its own range of the file, checking every read.
            for w in 0..2u64 {
                let (c, stop, ops) = (&c, &stop, &ops);
                s.spawn(move || {
                    let mut round = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let off = w * (8 << 20) + (round % 32) * (64 << 10);
                        let data = vec![(w * 31 + round) as u8; 64 << 10];
                        assert_eq!(
                            c.write(e.nodeid, o.fh, off, &data).unwrap() as usize,
                            data.len()
                        );
                        assert!(c.read(e.nodeid, o.fh, off, 64 << 10).unwrap() == data);
                        ops.fetch_add(2, Ordering::Relaxed);
                        round += 1;
                    }
                });
            }
            std::thread::sleep(Duration::from_millis(200));
            let a = c.device().hot_add_memory().unwrap();
            std::thread::sleep(Duration::from_millis(200));
            let b = c.device().hot_add_memory().unwrap();
            std::thread::sleep(Duration::from_millis(200));
            stop.store(true, Ordering::Relaxed);
            (a, b)
        });
        assert!(
            ops.load(Ordering::Relaxed) > 10,
            "I/O ran during the hot-add"
        );
        let ((a, a_len), (b, b_len)) = added;
        assert!(a_len >= 16 << 20 && b_len >= 16 << 20);
        let mem = c.device().memory();
        assert_eq!(mem.regions().len(), 3, "three regions plugged");

        // A WRITE whose request and data lie in the first new region, its reply in the second.
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        let unique = c.next_unique();
        let body = WriteIn {
            fh: o.fh,
            offset: 1 << 20,
            size: data.len() as u32,
            ..Default::default()
        };
        let len = size_of::<InHeader>() + size_of::<WriteIn>() + data.len();
        let mut req = in_header(len, opcode::WRITE, unique, e.nodeid)
            .as_slice()
            .to_vec();
        req.extend_from_slice(body.as_slice());
        mem.write(a, &req).unwrap();
        mem.write(GuestAddress(a.0 + 0x10000), &data).unwrap();
        let reply_at = GuestAddress(b.0 + 0x2000);
        let chain = RawChain {
            readable: vec![
                ReadPart::Raw {
                    addr: a.0,
                    len: req.len() as u32,
                },
                ReadPart::Raw {
                    addr: a.0 + 0x10000,
                    len: data.len() as u32,
                },
            ],
            writable: vec![WritePart::Raw {
                addr: reply_at.0,
                len: 64,
            }],
            indirect: false,
        };
        let t = c.device().submit_raw(1, &chain).unwrap();
        let comp = c.device().wait(t).unwrap();
        assert_eq!(
            comp.used_len as usize,
            size_of::<OutHeader>() + size_of::<WriteOut>()
        );
        let out = mem.read(reply_at, comp.used_len as usize).unwrap();
        let hdr = OutHeader::from_slice(&out[..16]).copied().unwrap();
        assert_eq!(
            (hdr.error, hdr.unique),
            (0, unique),
            "WRITE from hot-added memory"
        );
        let wo = WriteOut::from_slice(&out[16..]).copied().unwrap();
        assert_eq!(wo.size as usize, data.len());

        // A READ whose reply data lands in the second new region.
        let unique = c.next_unique();
        let body = ReadIn {
            fh: o.fh,
            offset: 1 << 20,
            size: data.len() as u32,
            ..Default::default()
        };
        let len = size_of::<InHeader>() + size_of::<ReadIn>();
        let mut req = in_header(len, opcode::READ, unique, e.nodeid)
            .as_slice()
            .to_vec();
        req.extend_from_slice(body.as_slice());
        mem.write(GuestAddress(a.0 + 0x20000), &req).unwrap();
        let data_at = GuestAddress(b.0 + 0x40000);
        let chain = RawChain {
            readable: vec![ReadPart::Raw {
                addr: a.0 + 0x20000,
                len: req.len() as u32,
            }],
            writable: vec![
                WritePart::Raw {
                    addr: reply_at.0,
                    len: 16,
                },
                WritePart::Raw {
                    addr: data_at.0,
                    len: data.len() as u32,
                },
            ],
            indirect: false,
        };
        let t = c.device().submit_raw(2, &chain).unwrap();
        let comp = c.device().wait(t).unwrap();
        assert_eq!(
            comp.used_len as usize,
            16 + data.len(),
            "READ into hot-added memory"
        );
        assert!(mem.read(data_at, data.len()).unwrap() == data);
        let host = std::fs::read(d.share.join("f")).unwrap();
        assert!(host[1 << 20..(1 << 20) + data.len()] == data[..]);

        let log = d.assert_alive("memory hot-add");
        assert!(
            log.contains("guest memory mapped") && log.contains("regions=3"),
            "{log}"
        );
    }
}
