#!/usr/bin/env bash
# A real libvirt starts async-virtiofsd for a domain's <filesystem> and the guest uses the share.
#
# Installs Debian's libvirt (daemon + QEMU driver + virsh) if missing, starts virtlogd and
# libvirtd itself (no systemd needed), and for each configuration defines and boots a transient
# TCG domain with direct kernel boot (the e2e rig's 6.1 kernel and initramfs, demo mode: the
# guest lists the share, writes guest-was-here.txt and powers off) and
#   <filesystem type='mount'><driver type='virtiofs'/><binary path='DAEMON' .../>
# Checks: the guest reported PASS, the file it wrote is in the share, libvirt ran our binary
# (its log has our banner) with the options the XML asked for.
#
# usage: tests/libvirt/run.sh [path/to/async-virtiofsd]   (default: target/debug/async-virtiofsd)
# Ends with "libvirt: N passed, N failed". Run as root on Debian 12.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BIN=$(realpath "${1:-$REPO/target/debug/async-virtiofsd}")
[ -x "$BIN" ] || { echo "libvirt: no daemon binary at $BIN (run cargo build)" >&2; exit 2; }
CACHE=${E2E_CACHE:-$REPO/target/guest}
URI=qemu:///system
LOGS=$REPO/target/e2e-logs/libvirt
rm -rf "$LOGS"
mkdir -p "$LOGS"
say() { printf '[libvirt] %s\n' "$*"; }

# --- libvirt itself ------------------------------------------------------------------------
export DEBIAN_FRONTEND=noninteractive
if ! command -v libvirtd >/dev/null || ! command -v virsh >/dev/null; then
    say "installing libvirt (Debian packages)"
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends \
        libvirt-daemon-driver-qemu libvirt-daemon libvirt-clients >/dev/null
fi
bash "$REPO/tests/e2e/setup.sh" --kernel 6.1 >/dev/null
# What libvirt-daemon-system's postinst would do.
getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
id libvirt-qemu >/dev/null 2>&1 ||
    useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
mkdir -p /var/log/libvirt/qemu /var/run/libvirt /var/lib/libvirt/boot
pgrep -x virtlogd >/dev/null || virtlogd -d
STARTED_LIBVIRTD=0
if ! pgrep -x libvirtd >/dev/null; then
    libvirtd -d
    STARTED_LIBVIRTD=1
fi
for _ in $(seq 50); do virsh -c "$URI" version >/dev/null 2>&1 && break; sleep 0.2; done
virsh -c "$URI" version >/dev/null || { echo "libvirt: libvirtd did not come up" >&2; exit 1; }
say "$(virsh -c "$URI" version | grep -m1 'libvirt' || true)"

# QEMU runs as libvirt-qemu: give it its own copy of the kernel and initramfs.
install -m 644 "$CACHE/6.1/vmlinuz" /var/lib/libvirt/boot/avfs-vmlinuz
install -m 644 "$CACHE/6.1/initrd.gz" /var/lib/libvirt/boot/avfs-initrd.gz

passed=0
failed=0
DOMAIN=
cleanup() {
    [ -z "$DOMAIN" ] || virsh -c "$URI" destroy "$DOMAIN" >/dev/null 2>&1 || true
    if [ "$STARTED_LIBVIRTD" = 1 ]; then pkill -x libvirtd || true; fi
}
trap cleanup EXIT

# run NAME 'BINARY-ELEMENT-CHILDREN' 'BINARY-ATTRIBUTES' 'EXPECTED-ARG-REGEX'...
run() {
    local name=$1 children=$2 attrs=$3
    shift 3
    local share dir=$LOGS/$name ok=1 i
    DOMAIN=avfs-$name
    share=$(mktemp -d /var/lib/libvirt/avfs-share.XXXXXX)
    mkdir -p "$dir"
    echo "hello from the host" >"$share/hello.txt"
    local serial=/var/log/libvirt/qemu/$DOMAIN-serial.log fslog=/var/log/libvirt/qemu/$DOMAIN-fs0-virtiofsd.log
    rm -f "$serial" "$fslog"
    cat >"$dir/domain.xml" <<EOF
<domain type='qemu'>
  <name>$DOMAIN</name>
  <memory unit='MiB'>1024</memory>
  <vcpu>2</vcpu>
  <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>/var/lib/libvirt/boot/avfs-vmlinuz</kernel>
    <initrd>/var/lib/libvirt/boot/avfs-initrd.gz</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 e2e.mode=demo</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <filesystem type='mount' accessmode='passthrough'>
      <driver type='virtiofs' queue='1024'/>
      <binary path='$BIN'$attrs>$children</binary>
      <source dir='$share'/>
      <target dir='myfs'/>
    </filesystem>
    <serial type='file'><source path='$serial'/><target port='0'/></serial>
  </devices>
</domain>
EOF
    say "=== $name: virsh create (binary options: ${attrs:-none} ${children:-})"
    local start
    start=$(date +%s)
    if ! virsh -c "$URI" create "$dir/domain.xml" >"$dir/virsh.out" 2>&1; then
        sed 's/^/    virsh| /' "$dir/virsh.out"
        ok=0
    else
        # Transient domain: gone once the guest powers off. Meanwhile record the daemon's
        # command line, as libvirt built it.
        : >"$dir/cmdline"
        while virsh -c "$URI" domstate "$DOMAIN" >/dev/null 2>&1; do
            if [ ! -s "$dir/cmdline" ]; then
                local pid
                pid=$(pgrep -o -f "^$BIN " || true)
                [ -z "$pid" ] || tr '\0' ' ' <"/proc/$pid/cmdline" >"$dir/cmdline" 2>/dev/null || true
            fi
            if [ $(($(date +%s) - start)) -ge 300 ]; then
                say "timeout: destroying $DOMAIN"
                virsh -c "$URI" destroy "$DOMAIN" >/dev/null 2>&1 || true
                ok=0
                break
            fi
            sleep 1
        done
    fi
    DOMAIN=
    cp "$serial" "$dir/serial.log" 2>/dev/null || true
    cp "$fslog" "$dir/virtiofsd.log" 2>/dev/null || true
    check() { if eval "$2"; then echo "    ok - $1"; else echo "    not ok - $1"; ok=0; fi; }
    check "guest reported E2E-RESULT: PASS" "grep -q 'E2E-RESULT: PASS' '$dir/serial.log' 2>/dev/null"
    check "guest saw the host's file" "grep -q 'hello from the host' '$dir/serial.log' 2>/dev/null"
    check "the guest's file is in the share" "grep -q '^hello from the guest' '$share/guest-was-here.txt' 2>/dev/null"
    check "libvirt ran async-virtiofsd" "grep -q 'Waiting for vhost-user socket connection' '$dir/virtiofsd.log' 2>/dev/null"
    check "the daemon served and saw the frontend go" "grep -q 'vhost-user frontend disconnected' '$dir/virtiofsd.log' 2>/dev/null"
    echo "    daemon command line: $(cat "$dir/cmdline")"
    for i in "$@"; do
        check "libvirt passed $i" "grep -qE -- '$i' '$dir/cmdline'"
    done
    echo "    $(( $(date +%s) - start ))s, logs in $dir"
    rm -rf "$share"
    if [ "$ok" = 1 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}

run plain "" "" '--fd=[0-9]+' 'source='
run options "<cache mode='always'/><thread_pool size='16'/><lock posix='on' flock='on'/>" " xattr='on'" \
    'cache=always' 'xattr' 'thread-pool-size=16' '[, ]posix_lock' '[, ]flock'
# Locking off (the guest keeps its locks locally), as libvirt says it, and the chroot sandbox.
run nolock-chroot "<lock posix='off' flock='off'/><sandbox mode='chroot'/>" "" \
    'no_posix_lock' 'no_flock' 'sandbox=chroot'

echo "libvirt: $passed passed, $failed failed"
[ "$failed" = 0 ]
