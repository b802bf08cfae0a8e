//! The byte format of one `fuse_decoder` input: a session configuration, an optional INIT, then
//! a few requests, each with its layout over guest-memory segments and the filesystem's answer.
//!
//! Hand-written (not `arbitrary`) so that it is invertible ([`encode`] writes the seeds) and so
//! that parsing allocates nothing: [`parse`] returns the configuration and an iterator of
//! [`Request`]s borrowing the input. Running out of bytes yields zeros, so every byte string is an
//! input. Little endian throughout.
//!
//! ```text
//! input   := cfg:u8 [minor:u8 flags:u64 if cfg & CFG_INIT] request*    (at most MAX_REQUESTS)
//! request := op:u8 [opcode:u32 if op == 0xFF] ctl:u8
//!            [len_delta:i16 if ctl & LEN] [extlen:u16 if ctl & EXT]
//!            [answer:u8 size:u8 if ctl & ANSWER]
//!            [rsplit:u8 wsplit:u8 wsize:u16 if ctl & LAYOUT]
//!            [bend:u8 at:u8 value:u32 if ctl & BEND]
//!            args_len:u16 args:[u8; args_len]
//! ```

use std::borrow::Cow;

/// Requests per input (after the INIT of `cfg`).
pub const MAX_REQUESTS: usize = 8;

/// `cfg`: the session starts with an INIT (major 7, `minor`, `flags`).
pub const CFG_INIT: u8 = 1 << 0;
/// `cfg`: that INIT sends the 16-byte `fuse_init_in` of protocols before 7.36, not 64 bytes.
pub const CFG_INIT_COMPAT: u8 = 1 << 1;
/// `cfg`: that INIT says major 8 (the server answers with its version, no session).
pub const CFG_INIT_MAJOR8: u8 = 1 << 2;
/// `cfg >> CFG_FS_SHIFT & 3`: the filesystem's answer to INIT, see [`FsInit`].
pub const CFG_FS_SHIFT: u8 = 3;
/// `cfg >> CFG_PAGES_SHIFT`: index into [`MAX_PAGES`], the server's `Limits::max_pages`.
pub const CFG_PAGES_SHIFT: u8 = 5;
/// The `max_pages` limits the server may be built with.
pub const MAX_PAGES: [u16; 8] = [256, 1, 32, 0, 255, 16, 64, u16::MAX];

/// What the filesystem answers at INIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsInit {
    /// Every flag (the server keeps those the guest offered and it implements).
    All,
    /// No flag.
    Nothing,
    /// An error (EIO): no session.
    Fails,
    /// Exactly what the guest offered.
    Offered,
}

/// `ctl`: the header's `len` is off by `len_delta`.
pub const LEN: u8 = 1 << 0;
/// `ctl`: the header's `total_extlen` is `extlen` (else 0).
pub const EXT: u8 = 1 << 1;
/// `ctl`: the filesystem answers as `answer`/`size` say (else: success, size 8).
pub const ANSWER: u8 = 1 << 2;
/// `ctl`: segments as `rsplit`/`wsplit`/`wsize` say (else: one readable segment, one 4 KiB
/// writable one).
pub const LAYOUT: u8 = 1 << 3;
/// `ctl`: one segment is bent (see [`Bend`]).
pub const BEND: u8 = 1 << 4;

/// `answer` bit: the filesystem fails with `ERRNOS[answer & 0xF]` (modulo its length).
pub const ANSWER_ERR: u8 = 1 << 7;
/// `answer` bit: GETXATTR/LISTXATTR answer the size, not data (when asked for the size: the
/// `Filesystem` contract).
pub const ANSWER_XATTR_SIZE: u8 = 1 << 0;
/// `answer` bit: READ, WRITE and COPY_FILE_RANGE claim more bytes than they had (the server
/// must not believe it).
pub const ANSWER_OVERCLAIM: u8 = 1 << 1;
/// `answer` bit: READDIR finds no entry.
pub const ANSWER_EMPTY_DIR: u8 = 1 << 2;
/// `answer` bit: READLINK, GETXATTR, LISTXATTR and IOCTL data is 64 times `size`.
pub const ANSWER_BIG: u8 = 1 << 3;

/// `rsplit`/`wsplit`: bits 0-5 the piece size (0: one segment for everything).
pub const SPLIT_PIECE: u8 = 0x3F;
/// `rsplit`/`wsplit`: a zero-length segment after each piece.
pub const SPLIT_ZEROS: u8 = 1 << 6;
/// `rsplit`: the last readable segment is left out (the segments hold less than the message);
/// `wsplit`: the first writable segment is one byte long.
pub const SPLIT_ODD: u8 = 1 << 7;
/// `wsize` value for a reply buffer of 1 MiB + 4 KiB + 16 bytes (else `wsize` bytes).
pub const WSIZE_BIG: u16 = 0xFFFF;

/// A segment bent out of shape (`BEND`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bend {
    /// Bits 0-1: 0 the segment straddles the end of its memory region by `value % 4096`
    /// bytes; 1 its address is `u64::MAX - value % 4096`; 2 it lies on the other side's
    /// segments (a reply buffer over the request, or the request in the reply buffer);
    /// 3 its length is `value`. Bit 2: a writable segment (else a readable one).
    pub kind: u8,
    /// Which segment (modulo the count).
    pub at: u8,
    /// See `kind`.
    pub value: u32,
}

/// One request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// Opcode selector: below 0xF0 the opcode `op % 54` (every opcode and the unused 0, 7,
    /// 19); 0xF0..=0xFE the opcodes 54..=68 just past the last; 0xFF `raw_opcode`.
    pub op: u8,
    /// The opcode when `op == 0xFF`.
    pub raw_opcode: u32,
    /// Bits above (`LEN`, ...).
    pub ctl: u8,
    /// Added to the exact length (`LEN`).
    pub len_delta: i16,
    /// `total_extlen` (`EXT`).
    pub extlen: u16,
    /// How the filesystem answers (`ANSWER`; `ANSWER_*` bits).
    pub answer: u8,
    /// Data size in the filesystem's answers (`ANSWER`).
    pub size: u8,
    /// Readable layout (`LAYOUT`; `SPLIT_*` bits).
    pub rsplit: u8,
    /// Writable layout (`LAYOUT`; `SPLIT_*` bits).
    pub wsplit: u8,
    /// Writable bytes (`LAYOUT`; see [`WSIZE_BIG`]).
    pub wsize: u16,
    /// The bent segment (`BEND`).
    pub bend: Bend,
    /// The arguments after the FUSE header.
    pub args: Cow<'a, [u8]>,
}

/// Opcodes `op` selects below 0xF0 (0..=53).
pub const OPCODE_SPAN: u8 = 54;

impl Request<'_> {
    /// A request with `opcode` and `args`, default layout and answer.
    pub fn new(opcode: u32, args: Vec<u8>) -> Request<'static> {
        let (op, raw_opcode) = if opcode < u32::from(OPCODE_SPAN) {
            (opcode as u8, 0)
        } else {
            (0xFF, opcode)
        };
        Request {
            op,
            raw_opcode,
            ctl: 0,
            len_delta: 0,
            extlen: 0,
            answer: 0,
            size: 8,
            rsplit: 0,
            wsplit: 0,
            wsize: 4096,
            bend: Bend::default(),
            args: Cow::Owned(args),
        }
    }

    /// The FUSE opcode.
    pub fn opcode(&self) -> u32 {
        match self.op {
            0xFF => self.raw_opcode,
            op if op >= 0xF0 => u32::from(OPCODE_SPAN) + u32::from(op - 0xF0),
            op => u32::from(op % OPCODE_SPAN),
        }
    }
}

/// The session configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Bits above (`CFG_*`).
    pub cfg: u8,
    /// INIT's minor version (`CFG_INIT`).
    pub minor: u8,
    /// INIT's flags, `flags2` in the high half (`CFG_INIT`).
    pub flags: u64,
}

impl Config {
    /// The filesystem's answer to INIT.
    pub fn fs_init(&self) -> FsInit {
        [FsInit::All, FsInit::Nothing, FsInit::Fails, FsInit::Offered]
            [usize::from(self.cfg >> CFG_FS_SHIFT & 3)]
    }

    /// The server's `max_pages` limit.
    pub fn max_pages(&self) -> u16 {
        MAX_PAGES[usize::from(self.cfg >> CFG_PAGES_SHIFT)]
    }
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.bytes())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }
    fn slice(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }
}

/// The requests of an input, parsed as they are taken.
pub struct Requests<'a> {
    c: Cursor<'a>,
    taken: usize,
}

impl<'a> Iterator for Requests<'a> {
    type Item = Request<'a>;

    fn next(&mut self) -> Option<Request<'a>> {
        if self.c.0.is_empty() || self.taken == MAX_REQUESTS {
            return None;
        }
        self.taken += 1;
        let c = &mut self.c;
        let op = c.u8();
        let raw_opcode = if op == 0xFF { c.u32() } else { 0 };
        let ctl = c.u8();
        let mut r = Request::new(0, Vec::new());
        r.op = op;
        r.raw_opcode = raw_opcode;
        r.ctl = ctl;
        if ctl & LEN != 0 {
            r.len_delta = c.u16() as i16;
        }
        if ctl & EXT != 0 {
            r.extlen = c.u16();
        }
        if ctl & ANSWER != 0 {
            r.answer = c.u8();
            r.size = c.u8();
        }
        if ctl & LAYOUT != 0 {
            r.rsplit = c.u8();
            r.wsplit = c.u8();
            r.wsize = c.u16();
        }
        if ctl & BEND != 0 {
            r.bend = Bend {
                kind: c.u8(),
                at: c.u8(),
                value: c.u32(),
            };
        }
        let n = usize::from(c.u16());
        r.args = Cow::Borrowed(c.slice(n));
        Some(r)
    }
}

/// Reads any byte string as an input.
pub fn parse(data: &[u8]) -> (Config, Requests<'_>) {
    let mut c = Cursor(data);
    let mut config = Config {
        cfg: c.u8(),
        ..Default::default()
    };
    if config.cfg & CFG_INIT != 0 {
        config.minor = c.u8();
        config.flags = c.u64();
    }
    (config, Requests { c, taken: 0 })
}

/// The bytes [`parse`] reads back as `config` and `requests`.
pub fn encode(config: &Config, requests: &[Request<'_>]) -> Vec<u8> {
    let mut out = vec![config.cfg];
    if config.cfg & CFG_INIT != 0 {
        out.push(config.minor);
        out.extend(config.flags.to_le_bytes());
    }
    for r in requests.iter().take(MAX_REQUESTS) {
        out.push(r.op);
        if r.op == 0xFF {
            out.extend(r.raw_opcode.to_le_bytes());
        }
        out.push(r.ctl);
        if r.ctl & LEN != 0 {
            out.extend(r.len_delta.to_le_bytes());
        }
        if r.ctl & EXT != 0 {
            out.extend(r.extlen.to_le_bytes());
        }
        if r.ctl & ANSWER != 0 {
            out.extend([r.answer, r.size]);
        }
        if r.ctl & LAYOUT != 0 {
            out.extend([r.rsplit, r.wsplit]);
            out.extend(r.wsize.to_le_bytes());
        }
        if r.ctl & BEND != 0 {
            out.extend([r.bend.kind, r.bend.at]);
            out.extend(r.bend.value.to_le_bytes());
        }
        let n = r.args.len().min(usize::from(u16::MAX));
        out.extend((n as u16).to_le_bytes());
        out.extend(&r.args[..n]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_parse_round_trip() {
        let config = Config {
            cfg: CFG_INIT | CFG_INIT_COMPAT | 3 << CFG_FS_SHIFT | 7 << CFG_PAGES_SHIFT,
            minor: 45,
            flags: 0x1234_5678_9abc_def0,
        };
        let mut a = Request::new(4096, b"abc".to_vec());
        a.ctl = LEN | EXT | ANSWER | LAYOUT | BEND;
        a.len_delta = -3;
        a.extlen = 2;
        a.answer = ANSWER_ERR | 5;
        a.size = 200;
        a.rsplit = SPLIT_ZEROS | 7;
        a.wsplit = SPLIT_ODD | 1;
        a.wsize = WSIZE_BIG;
        a.bend = Bend {
            kind: 6,
            at: 3,
            value: 0xdead_beef,
        };
        let b = Request::new(1, b"hello\0".to_vec());
        let bytes = encode(&config, &[a.clone(), b.clone()]);
        let (c, reqs) = parse(&bytes);
        assert_eq!(c, config);
        assert_eq!(reqs.collect::<Vec<_>>(), vec![a, b]);
        assert_eq!(config.fs_init(), FsInit::Offered);
        assert_eq!(config.max_pages(), u16::MAX);
    }

    #[test]
    fn any_bytes_parse_and_stop_at_max_requests() {
        let (c, reqs) = parse(&[0xFF; 4]);
        assert_eq!(c.cfg, 0xFF);
        assert_eq!(reqs.count(), 0, "the INIT fields ate the rest");
        // Each request: op 1, ctl 0, args_len 0: four bytes.
        let bytes: Vec<u8> = std::iter::once(0).chain([1, 0, 0, 0].repeat(40)).collect();
        let (_, reqs) = parse(&bytes);
        let all: Vec<_> = reqs.collect();
        assert_eq!(all.len(), MAX_REQUESTS);
        assert!(all.iter().all(|r| r.opcode() == 1 && r.args.is_empty()));
        let mut r = Request::new(0, vec![]);
        for (op, opcode) in [(53, 53), (54, 0), (0xF0, 54), (0xFE, 68)] {
            r.op = op;
            assert_eq!(r.opcode(), opcode, "op {op:#x}");
        }
    }
}
