//! A short sequence of FUSE requests, each in a descriptor chain of fuzz-chosen layout in guest
//! memory, through the pipeline's per-chain code and the daemon's real share on a temporary
//! directory. The input format and the invariants: `fuzz/src/input.rs`, `fuzz/src/lib.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    async_virtiofsd_fuzz::run_request_pipeline(data);
});
