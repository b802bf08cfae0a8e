//! The values of `--max-inodes` and `--max-bytes`.

/// `--max-inodes N`: a whole number, at least 1.
pub fn parse_count(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1 (leave the option out for no limit)".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("expected a whole number of inodes, e.g. 100000".into()),
    }
}

/// `--max-bytes SIZE`: bytes, or with a suffix K, M, G or T (powers of 1024; `KiB`, `MiB`, ...
/// too), at least 1.
pub fn parse_size(s: &str) -> Result<u64, String> {
    const HOW: &str = "expected a size in bytes, or with K, M, G or T (powers of 1024), e.g. 10G";
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits);
    let number: u64 = number.parse().map_err(|_| HOW.to_string())?;
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KIB" => 10,
        "M" | "MIB" => 20,
        "G" | "GIB" => 30,
        "T" | "TIB" => 40,
        _ => return Err(HOW.into()),
    };
    match number.checked_mul(1 << shift) {
        Some(0) => Err("must be at least 1 byte (leave the option out for no limit)".into()),
        Some(n) => Ok(n),
        None => Err(format!("{s} is more bytes than there can be")),
    }
}
