#!/bin/sh
# One boot of the reboot test (busybox sh), run by /init in e2e.mode=reboot with the share on
# ROOT. QEMU runs without -no-reboot, so `reboot -f` resets the machine and the same kernel and
# initramfs boot again, against the same daemon: every boot is a new virtio-fs driver, and so a
# new FUSE session, in one QEMU process. State lives in ROOT/reboot on the share:
#   boots                 boots completed so far (this boot is boots + 1)
#   block-K, block-K.md5  a 64 KiB random block written by boot K, and its md5
#   kept-K                written by boot K and synced: must be intact in every later boot
#   inflight-K            appended block by block by boot K until the reboot cut it off: every
#                         complete block must equal block-K (a partial last block is allowed:
#                         the guest died mid-write)
# Every boot verifies what all earlier boots left, writes its own files, and then either starts
# the in-flight writer and reboots with it running (boots < TOTAL) or reports and exits. Odd
# boots reboot themselves (reboot -f); even boots have the host reset the machine from the QEMU
# monitor (system_reset: no guest shutdown at all, the driver never quiesces). The last boot
# also unmounts, unbinds and rebinds the virtio-fs driver, mounts again and checks the share.
# Prints TAP-like lines; exit status 0 = all checks passed, 10 = passed, reboot -f now,
# 11 = passed, waiting for the host's system_reset.
#
# usage: guest-reboot-test.sh TOTAL [ROOT=/mnt] [TAG=myfs]
# shellcheck shell=sh

TOTAL=${1:?usage: guest-reboot-test.sh TOTAL [ROOT]}
ROOT=${2:-/mnt}
TAG=${3:-myfs}
DIR=$ROOT/reboot
BLOCK=65536

FAILED=0
ok() { echo "ok - $1"; }
not_ok() { FAILED=$((FAILED + 1)); echo "not ok - $1: $2"; }
md5() { md5sum "$1" 2>/dev/null | cut -d' ' -f1; }

# Unmount (DESTROY), unbind and rebind the virtio-fs driver (a device reset: QEMU stops and
# restarts the rings), mount again (INIT) and check the share is whole.
rebind() {
    dev=$(basename "$(readlink -f /sys/bus/virtio/drivers/virtiofs/virtio* 2>/dev/null | head -n1)")
    if [ -z "$dev" ] || [ "$dev" = . ]; then
        not_ok "driver rebind" "no device bound to the virtiofs driver"
        return
    fi
    cd / && umount "$1" || { not_ok "driver rebind" "umount failed"; return; }
    echo "$dev" >/sys/bus/virtio/drivers/virtiofs/unbind || not_ok "driver rebind" "unbind failed"
    echo "$dev" >/sys/bus/virtio/drivers/virtiofs/bind || not_ok "driver rebind" "bind failed"
    mount -t virtiofs "$TAG" "$1" || { not_ok "driver rebind" "mount after rebind failed"; return; }
    if [ "$(md5 "$1/reboot/kept-1")" = "$(cat "$1/reboot/kept-1.md5")" ]; then
        ok "driver unbound and rebound ($dev): the share mounts again, kept-1 intact"
    else
        not_ok "driver rebind" "kept-1 differs after the rebind"
    fi
}

mkdir -p "$DIR" || { not_ok "mkdir $DIR" "failed"; exit 1; }
done_boots=$(cat "$DIR/boots" 2>/dev/null || echo 0)
boot=$((done_boots + 1))
echo "# boot $boot of $TOTAL"

# What every earlier boot left must be there, intact.
k=1
while [ $k -lt $boot ]; do
    want=$(cat "$DIR/block-$k.md5" 2>/dev/null)
    got=$(md5 "$DIR/block-$k")
    if [ -n "$want" ] && [ "$want" = "$got" ]; then ok "boot $boot: block-$k intact"
    else not_ok "boot $boot: block-$k" "md5 '$got', expected '$want'"; fi
    want=$(cat "$DIR/kept-$k.md5" 2>/dev/null)
    got=$(md5 "$DIR/kept-$k")
    if [ -n "$want" ] && [ "$want" = "$got" ]; then ok "boot $boot: kept-$k intact"
    else not_ok "boot $boot: kept-$k" "md5 '$got', expected '$want'"; fi
    # Every earlier boot rebooted with its writer running.
    size=$(stat -c %s "$DIR/inflight-$k" 2>/dev/null || echo missing)
    if [ "$size" = missing ]; then
        not_ok "boot $boot: inflight-$k" "missing"
    else
        blocks=$((size / BLOCK))
        bad=0
        i=0
        while [ $i -lt $blocks ]; do
            got=$(dd if="$DIR/inflight-$k" bs=$BLOCK skip=$i count=1 2>/dev/null | md5sum | cut -d' ' -f1)
            [ "$got" = "$(cat "$DIR/block-$k.md5")" ] || bad=$((bad + 1))
            i=$((i + 1))
        done
        if [ $bad = 0 ] && [ $blocks -gt 0 ]; then
            ok "boot $boot: inflight-$k has $blocks whole blocks, all intact (+$((size % BLOCK)) bytes cut off by the reboot)"
        else
            not_ok "boot $boot: inflight-$k" "$bad of $blocks blocks corrupt (size $size)"
        fi
    fi
    k=$((k + 1))
done

# This boot's own files: a fresh session must create, write, rename and sync as the first did.
dd if=/dev/urandom of=/tmp/block bs=$BLOCK count=1 2>/dev/null
cp /tmp/block "$DIR/block-$boot.tmp" && mv "$DIR/block-$boot.tmp" "$DIR/block-$boot" \
    && md5 /tmp/block >"$DIR/block-$boot.md5" || not_ok "boot $boot: write block-$boot" "failed"
dd if=/dev/urandom of="$DIR/kept-$boot" bs=1M count=2 2>/dev/null || not_ok "boot $boot: write kept-$boot" "failed"
md5 "$DIR/kept-$boot" >"$DIR/kept-$boot.md5"
sync
if [ "$(md5 "$DIR/block-$boot")" = "$(md5 /tmp/block)" ]; then ok "boot $boot: wrote block-$boot and kept-$boot"
else not_ok "boot $boot: read back block-$boot" "differs"; fi
echo $boot >"$DIR/boots.tmp" && mv "$DIR/boots.tmp" "$DIR/boots" && sync

if [ $boot -ge "$TOTAL" ]; then
    rebind "$ROOT"
    echo "# reboot test: $boot boots, $FAILED failed checks"
    [ $FAILED = 0 ]
    exit $?
fi
[ $FAILED = 0 ] || exit 1

# Reboot with writes in flight: the writer appends block after block (each cat is several FUSE
# WRITEs) and is still running when the machine resets. No unmount, no sync.
(
    while :; do cat /tmp/block >>"$DIR/inflight-$boot" || exit; done
) &
# Let it get going (TCG is slow), then pull the plug.
n=0
while [ "$(stat -c %s "$DIR/inflight-$boot" 2>/dev/null || echo 0)" -lt $((3 * BLOCK)) ] && [ $n -lt 60 ]; do
    sleep 0.5; n=$((n + 1))
done
if [ $((boot % 2)) = 1 ]; then
    echo "# boot $boot: reboot -f with writes in flight ($(stat -c %s "$DIR/inflight-$boot") bytes so far)"
    exit 10
fi
echo "# boot $boot: system_reset with writes in flight ($(stat -c %s "$DIR/inflight-$boot") bytes so far)"
echo "E2E-RESET-ME boot $boot"
exit 11
