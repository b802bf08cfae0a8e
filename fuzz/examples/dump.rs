fn main() {
    for path in std::env::args().skip(1) {
        let data = std::fs::read(&path).unwrap();
        let input = async_virtiofsd_fuzz::input::Input::parse(&data);
        println!("options {:#x}", input.options);
        for (i, r) in input.requests.iter().enumerate() {
            println!("{}: opcode {} flags {:#x} node {} fh {:#x} readable {:?} nwrite {} writable {:?} special_r {:?} special_w {:?} args {:02x?}", i+1, r.opcode(), r.flags, r.node, r.fh, r.readable, r.nwrite, r.writable, r.special_r, r.special_w, &r.args[..r.args.len().min(96)]);
        }
    }
}
