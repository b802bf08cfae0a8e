#!/usr/bin/env bash
# Prepare everything the guest end-to-end tests need, idempotently:
#   - Debian packages (QEMU, busybox-static, cpio, kmod, xz, the C virtiofsd)
#   - two guest kernels: Debian 12's 6.1 (virtio-fs as modules) and
#     Debian 13's 6.12 (virtio-fs built in, multi-queue aware)
#   - tests/guest-probe, built statically (glibc crt-static) for the guest
#   - the unprivileged host user avfs-e2e with 65536 subordinate uids and gids, which
#     matrix.sh's rootless configuration runs the daemon as
#   - one initramfs per kernel with busybox, /init, the guest-*-test.sh scripts and
#     guest-probe
# Everything is cached under ${E2E_CACHE:-REPO/target/guest}; a second run only
# rebuilds an initramfs whose inputs changed.
#
# Outputs: $CACHE/6.1/{vmlinuz,initrd.gz}  $CACHE/6.12/{vmlinuz,initrd.gz}
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${E2E_CACHE:-$REPO/target/guest}
KERNELS=(6.1 6.12)

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
    cat <<EOF
usage: $0 [--kernel 6.1|6.12]...

Installs missing packages, fetches guest kernels and builds initramfs images
under \$E2E_CACHE (default: $REPO/target/guest). Safe to re-run.
EOF
}

while [ $# -gt 0 ]; do
    case $1 in
        --kernel) shift; [ $# -gt 0 ] || die "--kernel needs a value"
                  if [ "${SELECTED:-}" != 1 ]; then KERNELS=(); SELECTED=1; fi
                  KERNELS+=("$1") ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done

# apt needs root; use sudo when we are not root and it is available.
SUDO=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); fi
fi
export DEBIAN_FRONTEND=noninteractive

# Say where a failing command was (set -e alone exits silently) and remove
# half-built scratch trees.
SCRATCH=
trap 'log "ERROR: command failed at line $LINENO"' ERR
trap '[ -z "$SCRATCH" ] || rm -rf "$SCRATCH"' EXIT

APT_UPDATED=0
apt_update_once() {
    if [ "$APT_UPDATED" = 0 ]; then
        log "apt-get update"
        "${SUDO[@]}" apt-get update -q >/dev/null
        APT_UPDATED=1
    fi
}

is_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

ensure_packages() {
    local missing=() p
    # fio: benches/run's fio mode over the vhost-user-fs-mount bridge. uidmap: newuidmap and
    # newgidmap, which a non-root daemon's --uid-map/--gid-map need (the rootless run).
    for p in qemu-system-x86 qemu-system-common busybox-static cpio kmod xz-utils fio uidmap; do
        is_installed "$p" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        apt_update_once
        log "installing: ${missing[*]}"
        "${SUDO[@]}" apt-get install -y -q "${missing[@]}" >/dev/null
    fi
}

# The host user the rootless configuration runs the daemon as (run-e2e.sh --daemon-user), a
# system user of its own with 65536 subordinate ids for its user namespace (--uid-map and
# --gid-map through newuidmap/newgidmap). The range sits far above the 100000.. ranges useradd
# hands out, so it overlaps no one's.
E2E_USER=avfs-e2e
E2E_SUBIDS=3000000000-3000065535
ensure_e2e_user() {
    local f
    if ! getent passwd "$E2E_USER" >/dev/null; then
        log "adding the system user $E2E_USER (the rootless e2e configuration's daemon)"
        "${SUDO[@]}" useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$E2E_USER" || return 1
    fi
    for f in subuid subgid; do
        grep -q "^$E2E_USER:" "/etc/$f" 2>/dev/null && continue
        [ -e "/etc/$f" ] || "${SUDO[@]}" touch "/etc/$f" || return 1
        "${SUDO[@]}" usermod "--add-${f}s" "$E2E_SUBIDS" "$E2E_USER" || return 1
    done
}

# Decompress a module file to DEST (busybox insmod cannot read .ko.xz/.ko.zst).
copy_module() {
    local src=$1 dest=$2
    case $src in
        *.ko.xz)  xz -dc "$src" >"$dest" ;;
        *.ko.zst) zstd -qdc "$src" >"$dest" ;;  # needs zstd; no Debian kernel uses it yet
        *.ko.gz)  gzip -dc "$src" >"$dest" ;;
        *.ko)     cp "$src" "$dest" ;;
        *) die "unknown module format: $src" ;;
    esac
}

# Unpack a kernel .deb: keep vmlinuz plus the (decompressed) modules virtio-fs
# needs, in load order, written to modules/order. Built-in drivers are skipped.
extract_kernel() {
    local deb=$1 out=$2 scratch kver
    scratch=$(mktemp -d "$CACHE/extract.XXXXXX"); SCRATCH=$scratch
    dpkg -x "$deb" "$scratch"
    # Kernel packages ship /boot in either the root or usr/lib (usrmerge).
    local moddir=$scratch/lib/modules
    [ -d "$moddir" ] || moddir=$scratch/usr/lib/modules
    kver=$(find "$moddir" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | head -n1 || true)
    [ -n "$kver" ] || die "no lib/modules in $deb"
    local vmlinuz=$scratch/boot/vmlinuz-$kver
    [ -f "$vmlinuz" ] || die "no vmlinuz in $deb"

    # The .deb has no modules.dep (postinst builds it); make one so modprobe
    # can tell us the dependency closure and load order.
    depmod -b "$(dirname "$(dirname "$moddir")")" "$kver"
    rm -rf "$out.tmp"; mkdir -p "$out.tmp/modules"
    : >"$out.tmp/modules/order"
    local line path name have_virtiofs=0
    while read -r line; do
        case $line in
            insmod\ *)
                path=${line#insmod }; path=${path%% *}
                name=$(basename "$path"); name=${name%%.ko*}
                # modprobe prints every dependency once per chain; keep first.
                grep -qx "$name" "$out.tmp/modules/order" && continue
                copy_module "$path" "$out.tmp/modules/$name.ko"
                echo "$name" >>"$out.tmp/modules/order"
                [ "$name" != virtiofs ] || have_virtiofs=1 ;;
            builtin\ virtiofs) have_virtiofs=1 ;;
            builtin\ *) ;;
            *) die "unexpected modprobe output: $line" ;;
        esac
    done < <(modprobe -d "$(dirname "$(dirname "$moddir")")" -S "$kver" --show-depends -a \
                 virtio_pci virtiofs)
    [ "$have_virtiofs" = 1 ] || die "kernel $kver has no virtiofs driver"
    cp "$vmlinuz" "$out.tmp/vmlinuz"
    echo "$kver" >"$out.tmp/version"
    rm -rf "$scratch"; SCRATCH=
    # Replace atomically so an interrupted run never leaves half a kernel.
    rm -rf "$out.kernel"; mv "$out.tmp" "$out.kernel"
}

# apt options for a private trixie configuration that leaves the system alone.
TRIXIE_APT=()
setup_trixie_apt() {
    local refresh=${1:-0} dir=$CACHE/apt-trixie codename src
    mkdir -p "$dir/sources" "$dir/lists/partial" "$dir/cache/archives/partial"
    codename=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)
    codename=${codename:-bookworm}
    # Copy the system's own first Debian source, renamed to trixie, so no
    # registry host is written in this repository.
    src=/etc/apt/sources.list.d/debian.sources
    if [ -f "$src" ]; then
        awk 'BEGIN { RS = ""; ORS = "\n" } NR == 1 { print; exit }' "$src" \
            | sed "s/\b$codename\b/trixie/g" >"$dir/sources/trixie.sources"
    elif [ -f /etc/apt/sources.list ]; then
        grep -m1 '^deb ' /etc/apt/sources.list \
            | sed "s/\b$codename\b/trixie/g" >"$dir/sources/trixie.list"
    else
        die "no apt source found to derive a trixie source from"
    fi
    TRIXIE_APT=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$dir/sources"
                -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache"
                -o APT::Sandbox::User=root)
    if [ "$refresh" = 1 ]; then
        # Start from scratch: stale or damaged lists are why we are here.
        find "$dir/lists" -maxdepth 1 -type f -name '*_*' -delete
        rm -f "$dir/cache/"*.bin
    fi
    if ! ls "$dir/lists/"*_Packages* >/dev/null 2>&1; then
        log "apt-get update (private trixie lists)"
        apt-get "${TRIXIE_APT[@]}" update -q >/dev/null
    fi
}

# Name of the versioned kernel package linux-image-amd64 points at.
kernel_pkg() {
    apt-cache "$@" depends linux-image-amd64 2>/dev/null \
        | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}

# Resolve and download the kernel package for K into DIR; prints the name.
# REFRESH=1 updates the package lists first (they may name a kernel the
# registry no longer has).
download_kernel() {
    local k=$1 dl=$2 refresh=$3 pkg
    case $k in
        6.1)
            if [ "$refresh" = 1 ]; then APT_UPDATED=0; fi
            pkg=$(kernel_pkg)
            if [ -z "$pkg" ] || [ "$refresh" = 1 ]; then apt_update_once; pkg=$(kernel_pkg); fi
            case $pkg in linux-image-6.1.*) ;; *) log "cannot resolve a 6.1 kernel (got '$pkg')"; return 1 ;; esac
            log "kernel $k: downloading $pkg (~70 MB)"
            (cd "$dl" && apt-get -q -o APT::Sandbox::User=root download "$pkg" >/dev/null) || return 1 ;;
        6.12)
            setup_trixie_apt "$refresh"
            pkg=$(kernel_pkg "${TRIXIE_APT[@]}")
            case $pkg in linux-image-6.12.*) ;; *) log "cannot resolve a 6.12 kernel (got '$pkg')"; return 1 ;; esac
            log "kernel $k: downloading $pkg (~100 MB)"
            (cd "$dl" && apt-get -q "${TRIXIE_APT[@]}" download "$pkg" >/dev/null) || return 1 ;;
        *) die "unknown kernel $k (want 6.1 or 6.12)" ;;
    esac
    echo "$pkg"
}

fetch_kernel() {
    local k=$1 out=$CACHE/$1 pkg
    if [ -f "$out.kernel/vmlinuz" ] && [ -f "$out.kernel/modules/order" ]; then
        log "kernel $k: cached ($(cat "$out.kernel/version"))"
        return
    fi
    local dl=$CACHE/dl
    mkdir -p "$dl"
    if ! pkg=$(download_kernel "$k" "$dl" 0); then
        log "kernel $k: retrying with refreshed package lists"
        pkg=$(download_kernel "$k" "$dl" 1) || die "could not download the $k kernel"
    fi
    local deb
    deb=$(find "$dl" -maxdepth 1 -name "${pkg}_*.deb" | head -n1)
    [ -n "$deb" ] || die "download of $pkg produced no .deb"
    log "kernel $k: extracting"
    extract_kernel "$deb" "$out"
    rm -f "$deb"   # vmlinuz + modules are all we keep (saves ~100 MB)
    local mods
    mods=$(tr '\n' ' ' <"$out.kernel/modules/order")
    log "kernel $k: $(cat "$out.kernel/version"), modules: ${mods:-none (virtio-fs built in)}"
}

# Build tests/guest-probe as a static executable (the initramfs has no shared
# libraries). It gets its own target directory so the static RUSTFLAGS do not
# invalidate the main build cache; cargo makes a second run a no-op.
PROBE=
build_probe() {
    local target=x86_64-unknown-linux-gnu dir=$REPO/target/guest-probe
    command -v cargo >/dev/null 2>&1 || die "cargo not found: it builds tests/guest-probe"
    log "guest-probe: cargo build (static)"
    # Stripped: a smaller initramfs boots faster under TCG.
    (cd "$REPO" && RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR=$dir \
        CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --release --quiet -p guest-probe --target "$target") \
        || die "building tests/guest-probe failed"
    PROBE=$dir/$target/release/guest-probe
    [ -x "$PROBE" ] || die "no $PROBE after cargo build"
    # static-pie prints "statically linked", plain static "not a dynamic executable".
    ldd "$PROBE" 2>&1 | grep -qE 'statically linked|not a dynamic executable' \
        || die "$PROBE is not statically linked"
}

# Build $CACHE/K/initrd.gz unless its inputs (hashed) are unchanged.
build_initrd() {
    local k=$1 kdir=$CACHE/$1.kernel out=$CACHE/$1 busybox stamp
    busybox=$(dpkg -L busybox-static | grep -m1 '/bin/busybox$')
    [ -x "$busybox" ] || die "busybox-static binary not found"
    local inputs=("$HERE/guest-init.sh" "$HERE/guest-fs-test.sh" "$HERE/guest-reboot-test.sh"
                  "$HERE/guest-hotplug-test.sh" "$HERE/guest-readonly-test.sh"
                  "$HERE/guest-options-test.sh" "$HERE/guest-rootless-test.sh" "$HERE/guest-lib.sh"
                  "$busybox" "$PROBE"
                  "${BASH_SOURCE[0]}" "$kdir/modules/order")
    local ko mods
    mapfile -t mods <"$kdir/modules/order"
    for ko in ${mods[@]+"${mods[@]}"}; do inputs+=("$kdir/modules/$ko.ko"); done
    stamp=$(cat "${inputs[@]}" | sha256sum | cut -d' ' -f1)
    mkdir -p "$out"
    if [ -f "$out/initrd.gz" ] && [ -f "$out/vmlinuz" ] \
        && [ "$(cat "$out/initrd.stamp" 2>/dev/null)" = "$stamp" ]; then
        log "initramfs $k: up to date"
        return
    fi
    log "initramfs $k: building"
    local root
    root=$(mktemp -d "$CACHE/initrd.XXXXXX"); SCRATCH=$root
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,mnt,e2e,lib/modules/e2e}
    cp "$busybox" "$root/bin/busybox"
    # One symlink per applet, at the path busybox expects it.
    local applet
    while read -r applet; do
        [ "$applet" = bin/busybox ] && continue
        ln -sf /bin/busybox "$root/$applet"
    done < <("$busybox" --list-full)
    # The kernel opens /dev/console before running /init; without it the
    # init script would have no stdout. mknod needs root; /init re-opens the
    # console from devtmpfs anyway.
    mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true
    install -m 755 "$HERE/guest-init.sh" "$root/init"
    install -m 755 "$HERE/guest-fs-test.sh" "$root/e2e/guest-fs-test.sh"
    install -m 755 "$HERE/guest-reboot-test.sh" "$root/e2e/guest-reboot-test.sh"
    install -m 755 "$HERE/guest-hotplug-test.sh" "$root/e2e/guest-hotplug-test.sh"
    install -m 755 "$HERE/guest-readonly-test.sh" "$root/e2e/guest-readonly-test.sh"
    install -m 755 "$HERE/guest-options-test.sh" "$root/e2e/guest-options-test.sh"
    install -m 755 "$HERE/guest-rootless-test.sh" "$root/e2e/guest-rootless-test.sh"
    install -m 644 "$HERE/guest-lib.sh" "$root/e2e/guest-lib.sh"
    install -m 755 "$PROBE" "$root/e2e/guest-probe"
    cp "$kdir/modules/order" "$root/lib/modules/e2e/order"
    for ko in ${mods[@]+"${mods[@]}"}; do cp "$kdir/modules/$ko.ko" "$root/lib/modules/e2e/"; done
    cat "$kdir/version" >"$root/e2e/kernel-version"
    (cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) \
        | gzip -9 >"$out/initrd.gz.tmp"
    mv "$out/initrd.gz.tmp" "$out/initrd.gz"
    cp "$kdir/vmlinuz" "$out/vmlinuz"
    echo "$stamp" >"$out/initrd.stamp"
    rm -rf "$root"; SCRATCH=
    log "initramfs $k: $(du -h "$out/initrd.gz" | cut -f1) -> $out/initrd.gz"
}

ensure_packages
# Only the rootless configurations need the user: without it they fail (run-e2e.sh says why).
ensure_e2e_user || log "WARNING: could not set up the host user $E2E_USER (needs root)"
mkdir -p "$CACHE"
build_probe
for k in "${KERNELS[@]}"; do
    fetch_kernel "$k"
    build_initrd "$k"
done
log "done: cache at $CACHE"
