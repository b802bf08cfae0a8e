//! Writes the seed corpus: `cargo run --example gen-seeds -- seeds/request_pipeline`.
fn main() {
    let dir = std::env::args().nth(1).expect("usage: gen-seeds DIR");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, input) in async_virtiofsd_fuzz::seeds::all() {
        std::fs::write(std::path::Path::new(&dir).join(name), input.encode()).unwrap();
    }
}
