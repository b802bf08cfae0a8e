//! O_DIRECT: an aligned transfer, then offsets, sizes and buffer addresses no multiple of 512,
//! read back direct and through the page cache.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use crate::{describe, drop_caches, ensure_eq, pattern, Context, Tap, KIB};

/// A page-aligned 4 KiB buffer, as O_DIRECT wants.
#[repr(C, align(4096))]
struct Page([u8; 4096]);

pub fn o_direct(tap: &mut Tap, dir: &Path) {
    let path = dir.join("direct");
    let name = "O_DIRECT aligned 4 KiB write + read back";
    let f = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => return tap.not_ok(name, &format!("open O_DIRECT: {}", describe(&e))),
    };
    let mut out = Box::new(Page([0; 4096]));
    out.0.copy_from_slice(&pattern(4 * KIB, 0x5a));
    let mut back = Box::new(Page([0; 4096]));
    tap.check(
        name,
        (|| {
            ensure_eq("written", 4096, f.write_at(&out.0, 0).context("pwrite")?)?;
            ensure_eq("read", 4096, f.read_at(&mut back.0, 0).context("pread")?)?;
            ensure_eq("O_DIRECT read matches", true, back.0 == out.0)?;
            drop(f);
            drop_caches();
            ensure_eq(
                "buffered read matches",
                true,
                fs::read(&path).context("read")? == out.0,
            )
        })(),
    );
}

/// Page-aligned bytes whose slices at an offset make buffers that are not.
#[repr(C, align(4096))]
struct Pages([u8; 4 * 4096]);

/// One O_DIRECT transfer: `len` bytes of the file at `offset`, through the buffer `skew` bytes
/// past a page boundary.
#[derive(Clone, Copy)]
struct Transfer {
    offset: u64,
    len: usize,
    skew: usize,
}

impl Transfer {
    fn aligned(self) -> bool {
        (self.offset as usize | self.len | self.skew) % 512 == 0
    }

    fn describe(self) -> String {
        format!(
            "{} B at {}, buffer at page+{}",
            self.len, self.offset, self.skew
        )
    }
}

/// What the probe learnt of O_DIRECT transfers the host may refuse (`--direct-io`).
enum Outcome {
    Done,
    Refused,
}

/// Runs one O_DIRECT transfer and checks what came of it. Without `--direct-io` the daemon opens
/// the host file without O_DIRECT, so any offset, size and buffer must work; with it the host's
/// filesystem decides: an unaligned transfer either works or fails EINVAL (ext4: offset, size and
/// buffer in 512-byte units; tmpfs since Linux 6.6: anything), nothing else.
fn direct_transfer(
    direct_io: bool,
    t: Transfer,
    io: impl FnOnce(Transfer) -> io::Result<usize>,
    want: usize,
) -> Result<Outcome, String> {
    match io(t) {
        Ok(n) => ensure_eq("bytes", want, n).map(|()| Outcome::Done),
        Err(e) if direct_io && !t.aligned() && e.raw_os_error() == Some(libc::EINVAL) => {
            Ok(Outcome::Refused)
        }
        Err(e) => Err(describe(&e)),
    }
}

/// O_DIRECT at offsets, sizes and buffer addresses that are no multiple of 512 (and an aligned
/// one), checked by reading back through O_DIRECT and through the page cache. The file stays as
/// `o-direct-host-check`; its intended contents go to `model` for the host to compare (md5 in
/// guest-fs-test.sh).
pub fn o_direct_unaligned(tap: &mut Tap, dir: &Path, direct_io: bool, model_path: Option<&Path>) {
    let path = dir.join("o-direct-host-check");
    let name = "O_DIRECT unaligned transfers";
    let f = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => return tap.not_ok(name, &format!("open O_DIRECT: {}", describe(&e))),
    };
    let mut buf = Box::new(Pages([0; 4 * 4096]));
    let mut model: Vec<u8> = Vec::new();
    let mut refused = Vec::new();
    let writes = [
        Transfer {
            offset: 8192,
            len: 4096,
            skew: 0,
        },
        Transfer {
            offset: 1000,
            len: 3000,
            skew: 1,
        },
        Transfer {
            offset: 5000,
            len: 6001,
            skew: 100,
        },
    ];
    for (i, t) in writes.into_iter().enumerate() {
        let data = pattern(t.len, 0x20 + i as u8);
        buf.0[t.skew..t.skew + t.len].copy_from_slice(&data);
        let what = format!("O_DIRECT write of {}", t.describe());
        let r = direct_transfer(
            direct_io,
            t,
            |t| f.write_at(&buf.0[t.skew..t.skew + t.len], t.offset),
            t.len,
        );
        match r {
            Ok(Outcome::Done) => {
                let end = t.offset as usize + t.len;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[t.offset as usize..end].copy_from_slice(&data);
                tap.ok(&what);
            }
            Ok(Outcome::Refused) => {
                refused.push(t.describe());
                tap.ok(&format!("{what}: EINVAL from the host's O_DIRECT"));
            }
            Err(detail) => tap.not_ok(&what, &detail),
        }
    }
    let reads = [
        Transfer {
            offset: 8192,
            len: 4096,
            skew: 0,
        },
        Transfer {
            offset: 777,
            len: 5000,
            skew: 3,
        },
        // Across the end of the file: a short read.
        Transfer {
            offset: (model.len() as u64).saturating_sub(2288),
            len: 4000,
            skew: 5,
        },
    ];
    for t in reads {
        let what = format!("O_DIRECT read of {}", t.describe());
        let start = (t.offset as usize).min(model.len());
        let want = &model[start..(start + t.len).min(model.len())];
        buf.0.fill(0xee);
        let r = direct_transfer(
            direct_io,
            t,
            |t| f.read_at(&mut buf.0[t.skew..t.skew + t.len], t.offset),
            want.len(),
        );
        match r {
            Ok(Outcome::Done) if &buf.0[t.skew..t.skew + want.len()] == want => tap.ok(&what),
            Ok(Outcome::Done) => tap.not_ok(&what, "data differs from what was written"),
            Ok(Outcome::Refused) => {
                refused.push(t.describe());
                tap.ok(&format!("{what}: EINVAL from the host's O_DIRECT"));
            }
            Err(detail) => tap.not_ok(&what, &detail),
        }
    }
    drop(f);
    drop_caches();
    tap.check(
        "O_DIRECT file read back through the page cache (caches dropped)",
        fs::read(&path)
            .context("read")
            .and_then(|back| ensure_eq("contents", true, back == model)),
    );
    if !refused.is_empty() {
        tap.note(&format!(
            "with --allow-direct-io the host refused unaligned O_DIRECT: {}",
            refused.join("; ")
        ));
    }
    if let Some(m) = model_path {
        tap.check(
            "O_DIRECT model written for the host's md5",
            fs::write(m, &model).context("write the model"),
        );
    }
}
