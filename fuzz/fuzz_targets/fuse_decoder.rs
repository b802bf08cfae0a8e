//! FUSE requests laid out over guest-memory segments, decoded and answered by our server
//! (`virtiofs-fuse`) alone, over a filesystem that does nothing. The input format and the
//! invariants: `fuzz/src/decoder_input.rs`, `fuzz/src/decoder.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    async_virtiofsd_fuzz::decoder::run_fuse_decoder(data);
});
