//! Runs inputs through the `request_pipeline` harness outside libFuzzer (a plain build, quick to
//! debug): `FUZZ_VERBOSE=1 cargo run --example replay -- FILE...`.
fn main() {
    for path in std::env::args().skip(1) {
        eprintln!("input {path}");
        let data = std::fs::read(&path).expect("read input");
        async_virtiofsd_fuzz::run_request_pipeline(&data);
    }
}
