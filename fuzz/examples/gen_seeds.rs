//! Writes the seed corpora of every target: `cargo run --example gen-seeds -- seeds` writes
//! `seeds/request_pipeline/` and `seeds/fuse_decoder/`.
use std::path::Path;

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "seeds".into());
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let d = Path::new(&dir).join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), bytes).unwrap();
    };
    for (name, input) in async_virtiofsd_fuzz::seeds::all() {
        write("request_pipeline", name, &input.encode());
    }
    for (name, bytes) in async_virtiofsd_fuzz::decoder_seeds::all() {
        write("fuse_decoder", &name, &bytes);
    }
}
