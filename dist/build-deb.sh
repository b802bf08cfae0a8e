#!/usr/bin/env bash
# Builds the Debian package of async-virtiofsd: release binary, man page (help2man, from the
# CLI's own --help), and `cargo deb` (installs cargo-deb and help2man if missing). Prints the
# path of the .deb on its last line.
#
# usage: dist/build-deb.sh
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
command -v help2man >/dev/null || { apt-get update -q >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -q help2man >/dev/null; }
cargo deb --version >/dev/null 2>&1 || cargo install cargo-deb --version 3.6.3 --locked
cargo build --release -p async-virtiofsd
mkdir -p target/dist
help2man --no-info --section 1 --name "virtio-fs vhost-user backend daemon" \
    target/release/async-virtiofsd | gzip -9n >target/dist/async-virtiofsd.1.gz
cargo deb -p async-virtiofsd --no-build --output target/dist/ | tail -n 1
