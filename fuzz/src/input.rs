//! The byte format of one fuzz input: share options, then a short sequence of requests, each with
//! its descriptor layout and its FUSE message.
//!
//! Hand-written rather than `arbitrary`-derived so that it is invertible: [`Input::encode`] writes
//! the seed corpus (`examples/gen_seeds.rs`) and [`Input::parse`] reads any byte string (running out
//! of bytes yields zeros, so every input is valid). Little endian throughout.
//!
//! ```text
//! input   := options:u8 request*                      (at most MAX_REQUESTS)
//! request := flags:u8 op:u8 [opcode:u32 if op == 0xFF]
//!            node:u8 [nodeid:u64 if node == 0xFF]
//!            [len_delta:i16 if flags & LEN_DELTA] [fh:u8 if flags & FH]
//!            nread:u8 size:u16 * min(nread, MAX_PIECES)
//!            nwrite:u8 (size:u16 * min(nwrite, MAX_PIECES) unless nwrite is 0 or 0xFF)
//!            [special (readable) if flags & SPECIAL_R] [special (writable) if flags & SPECIAL_W]
//!            args_len:u16 args:[u8; args_len]
//! special := kind:u8 at:u8 value:u64
//! ```

/// Requests per input.
pub const MAX_REQUESTS: usize = 12;
/// Readable or writable descriptors given explicitly per request.
pub const MAX_PIECES: usize = 16;

/// `Request::flags`: put the chain in an indirect descriptor table.
pub const INDIRECT: u8 = 1 << 0;
/// `args` is the whole message, FUSE header included, sent as is.
pub const RAW: u8 = 1 << 1;
/// Readable descriptors shorter than the message: drop the rest instead of adding a piece.
pub const DROP_TAIL: u8 = 1 << 2;
/// The header's `len` is off by `len_delta`.
pub const LEN_DELTA: u8 = 1 << 3;
/// Write a file handle the server returned earlier into the arguments (see `fh`).
pub const FH: u8 = 1 << 4;
/// One writable descriptor is bent (see [`Special`]).
pub const SPECIAL_W: u8 = 1 << 5;
/// The request comes from uid/gid 1000 instead of root.
pub const UNPRIVILEGED: u8 = 1 << 6;
/// One readable descriptor is bent (see [`Special`]).
pub const SPECIAL_R: u8 = 1 << 7;

/// `op` values below this are FUSE opcodes `op % OPCODE_SPAN` (most random bytes are then
/// opcodes the server knows); `0xF0..0xFF` are the opcodes just past it, `0xFF` a raw u32.
pub const OPCODE_SPAN: u8 = 50;
/// `node` values: 0 is the root, `1..=0x7F` a node id the server returned earlier,
/// `0x80..=0xFE` the small number `node - 0x80`, `0xFF` a raw u64.
pub const NODE_LEARNED_END: u8 = 0x80;
/// `nwrite` value for "one 4 KiB writable descriptor" (the common case).
pub const WRITE_DEFAULT: u8 = 0;
/// `nwrite` value for "no writable descriptor".
pub const WRITE_NONE: u8 = 0xFF;

/// A descriptor bent out of shape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Special {
    /// `kind % 4`: 0 address = `value`; 1 address straddles the end of guest memory;
    /// 2 address = the first descriptor's (overlap); 3 length = `value as u32`.
    pub kind: u8,
    /// Which descriptor (modulo the count).
    pub at: u8,
    /// Address or length.
    pub value: u64,
}

/// One request: the FUSE message and how it lies in the descriptor chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// Bits above.
    pub flags: u8,
    /// Opcode selector (see [`OPCODE_SPAN`]).
    pub op: u8,
    /// The opcode when `op == 0xFF`.
    pub raw_opcode: u32,
    /// Node selector (see [`NODE_LEARNED_END`]).
    pub node: u8,
    /// The node id when `node == 0xFF`.
    pub raw_node: u64,
    /// Added to the exact length when `flags & LEN_DELTA`.
    pub len_delta: i16,
    /// `fh & 0x80`: write at offset 8 of the arguments instead of 0; low bits: which handle.
    pub fh: u8,
    /// Readable descriptor sizes; empty: one descriptor holding the whole message.
    pub readable: Vec<u16>,
    /// `nwrite` as encoded (see [`WRITE_DEFAULT`], [`WRITE_NONE`]).
    pub nwrite: u8,
    /// Writable descriptor sizes when `nwrite` is neither of those.
    pub writable: Vec<u16>,
    /// The bent readable descriptor.
    pub special_r: Special,
    /// The bent writable descriptor.
    pub special_w: Special,
    /// Arguments after the FUSE header (or the whole message with `RAW`).
    pub args: Vec<u8>,
}

/// One fuzz input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Input {
    /// Share options: bits 0-1 cache mode (never, auto, metadata, always), bit 2 xattr,
    /// bit 3 writeback, bit 4 no readdirplus, bit 5 allow direct I/O.
    pub options: u8,
    /// The requests, in order.
    pub requests: Vec<Request>,
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
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
    fn special(&mut self) -> Special {
        Special {
            kind: self.u8(),
            at: self.u8(),
            value: self.u64(),
        }
    }
    fn sizes(&mut self, n: u8) -> Vec<u16> {
        (0..usize::from(n).min(MAX_PIECES))
            .map(|_| self.u16())
            .collect()
    }
}

impl Input {
    /// Reads any byte string as an input.
    pub fn parse(data: &[u8]) -> Input {
        let mut c = Cursor(data);
        let options = c.u8();
        let mut requests = Vec::new();
        while !c.0.is_empty() && requests.len() < MAX_REQUESTS {
            let mut r = Request {
                flags: c.u8(),
                op: c.u8(),
                ..Default::default()
            };
            if r.op == 0xFF {
                r.raw_opcode = c.u32();
            }
            r.node = c.u8();
            if r.node == 0xFF {
                r.raw_node = c.u64();
            }
            if r.flags & LEN_DELTA != 0 {
                r.len_delta = c.u16() as i16;
            }
            if r.flags & FH != 0 {
                r.fh = c.u8();
            }
            let nread = c.u8();
            r.readable = c.sizes(nread);
            r.nwrite = c.u8();
            if r.nwrite != WRITE_DEFAULT && r.nwrite != WRITE_NONE {
                r.writable = c.sizes(r.nwrite);
            }
            if r.flags & SPECIAL_R != 0 {
                r.special_r = c.special();
            }
            if r.flags & SPECIAL_W != 0 {
                r.special_w = c.special();
            }
            let n = usize::from(c.u16()).min(c.0.len());
            r.args = c.0[..n].to_vec();
            c.0 = &c.0[n..];
            requests.push(r);
        }
        Input { options, requests }
    }

    /// The bytes [`Input::parse`] reads back as `self`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.options];
        for r in self.requests.iter().take(MAX_REQUESTS) {
            out.extend([r.flags, r.op]);
            if r.op == 0xFF {
                out.extend(r.raw_opcode.to_le_bytes());
            }
            out.push(r.node);
            if r.node == 0xFF {
                out.extend(r.raw_node.to_le_bytes());
            }
            if r.flags & LEN_DELTA != 0 {
                out.extend(r.len_delta.to_le_bytes());
            }
            if r.flags & FH != 0 {
                out.push(r.fh);
            }
            let readable = &r.readable[..r.readable.len().min(MAX_PIECES)];
            out.push(readable.len() as u8);
            readable.iter().for_each(|s| out.extend(s.to_le_bytes()));
            if r.nwrite == WRITE_DEFAULT || r.nwrite == WRITE_NONE {
                out.push(r.nwrite);
            } else {
                let writable = &r.writable[..r.writable.len().min(MAX_PIECES)];
                out.push(writable.len() as u8);
                writable.iter().for_each(|s| out.extend(s.to_le_bytes()));
            }
            for (bit, s) in [(SPECIAL_R, r.special_r), (SPECIAL_W, r.special_w)] {
                if r.flags & bit != 0 {
                    out.extend([s.kind, s.at]);
                    out.extend(s.value.to_le_bytes());
                }
            }
            let n = r.args.len().min(usize::from(u16::MAX));
            out.extend((n as u16).to_le_bytes());
            out.extend(&r.args[..n]);
        }
        out
    }
}

impl Request {
    /// The FUSE opcode this request carries (unless `RAW`).
    pub fn opcode(&self) -> u32 {
        match self.op {
            0xFF => self.raw_opcode,
            op if op >= 0xF0 => u32::from(OPCODE_SPAN) + u32::from(op - 0xF0),
            op => u32::from(op % OPCODE_SPAN),
        }
    }

    /// A request with opcode `opcode` on node selector `node` with arguments `args`, laid out
    /// as one readable and one 4 KiB writable descriptor.
    pub fn new(opcode: u32, node: u8, args: Vec<u8>) -> Request {
        let mut r = Request {
            node,
            args,
            ..Default::default()
        };
        if opcode < u32::from(OPCODE_SPAN) {
            r.op = opcode as u8;
        } else {
            r.op = 0xFF;
            r.raw_opcode = opcode;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_parse_round_trip() {
        let mut r = Request::new(4096, 0xFF, b"abc".to_vec());
        r.raw_node = 77;
        r.flags = INDIRECT | LEN_DELTA | FH | SPECIAL_R | SPECIAL_W;
        r.len_delta = -3;
        r.fh = 0x81;
        r.readable = vec![1, 2, 3];
        r.nwrite = 2;
        r.writable = vec![16, 4000];
        r.special_r = Special {
            kind: 1,
            at: 2,
            value: 5,
        };
        r.special_w.value = u64::MAX;
        let input = Input {
            options: 0x15,
            requests: vec![r, Request::new(26, 0, vec![0; 16])],
        };
        assert_eq!(Input::parse(&input.encode()), input);
    }
}
