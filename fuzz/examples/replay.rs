//! Runs inputs through a target's harness outside libFuzzer (a plain build, quick to debug):
//! `FUZZ_VERBOSE=1 cargo run --example replay -- [request_pipeline|fuse_decoder] FILE...`
//! (the target defaults to `request_pipeline`).
fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let run: fn(&[u8]) = match args.first().map(String::as_str) {
        Some("fuse_decoder") => async_virtiofsd_fuzz::decoder::run_fuse_decoder,
        Some("request_pipeline") => async_virtiofsd_fuzz::run_request_pipeline,
        _ => {
            args.insert(0, String::new());
            async_virtiofsd_fuzz::run_request_pipeline
        }
    };
    for path in &args[1..] {
        eprintln!("input {path}");
        let data = std::fs::read(path).expect("read input");
        run(&data);
    }
}
