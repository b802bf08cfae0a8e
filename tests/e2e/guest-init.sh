#!/bin/sh
# /init of the e2e initramfs (busybox sh). Mounts the virtio-fs share with tag
# "myfs" on /mnt, runs the mode chosen on the kernel command line and prints
#   E2E-RESULT: PASS   or   E2E-RESULT: FAIL <reason>
# before powering off. Kernel command line options (read from /proc/cmdline):
#   e2e.mode=full|smoke|demo|reboot|hotplug|readonly|options|rootless   what to run (default full)
#   e2e.tag=TAG                virtio-fs tag (default myfs)
#   e2e.boots=N                reboot mode: boots in all (reboot -f, no unmount, between them)
#   e2e.fuse_max_pages=N       set fs.fuse.max_pages_limit to N before mounting (Linux 6.13+;
#                              the kernel says so when it has no such sysctl)
# shellcheck shell=sh

/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
# Re-open the console from devtmpfs in case the initramfs had no /dev/console.
exec </dev/console >/dev/console 2>&1
echo  # end any line firmware left unterminated
mount -t tmpfs -o size=256m tmpfs /tmp
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/ TZ=UTC0

say() { echo "[e2e] $*"; }

finish() {
    # Flush and detach the share so the daemon sees FUSE DESTROY and a
    # clean vhost-user disconnect, then leave; the kernel must not panic.
    cd /
    sync
    if grep -q ' /mnt virtiofs ' /proc/mounts; then
        umount /mnt || say "umount /mnt failed"
    fi
    echo "E2E-RESULT: $*"
    poweroff -f
    sleep 60
}

MODE=full
TAG=myfs
BOOTS=3
FUSE_MAX_PAGES=
read -r cmdline </proc/cmdline
for word in $cmdline; do
    case $word in
        e2e.mode=*) MODE=${word#e2e.mode=} ;;
        e2e.tag=*) TAG=${word#e2e.tag=} ;;
        e2e.boots=*) BOOTS=${word#e2e.boots=} ;;
        e2e.fuse_max_pages=*) FUSE_MAX_PAGES=${word#e2e.fuse_max_pages=} ;;
    esac
done
say "kernel $(uname -r), $(nproc) cpus, mode $MODE"

# Debian 12's 6.1 needs virtio/fuse/virtiofs modules (listed in load order by
# setup.sh); Debian 13's 6.12 has them built in and ships an empty list.
while read -r mod; do
    [ -n "$mod" ] || continue
    insmod "/lib/modules/e2e/$mod.ko" || finish "FAIL insmod $mod"
done </lib/modules/e2e/order

# Pages per FUSE request the kernel allows (fuse_conn_init copies it at mount): a sysctl since
# Linux 6.13, the constant FUSE_MAX_MAX_PAGES (256) before.
LIMIT=/proc/sys/fs/fuse/max_pages_limit
if [ -n "$FUSE_MAX_PAGES" ]; then
    if [ -f "$LIMIT" ]; then
        echo "$FUSE_MAX_PAGES" >"$LIMIT" || finish "FAIL set fs.fuse.max_pages_limit=$FUSE_MAX_PAGES"
    else
        say "no fs.fuse.max_pages_limit in this kernel (it came in Linux 6.13): FUSE requests stay at 256 pages"
    fi
fi
if [ -f "$LIMIT" ]; then
    say "fs.fuse.max_pages_limit = $(cat "$LIMIT")"
else
    say "fs.fuse.max_pages_limit: none (Linux before 6.13: 256 pages, FUSE_MAX_MAX_PAGES)"
fi

# The virtio-pci device may be probed asynchronously; retry briefly.
n=0
until mount -t virtiofs "$TAG" /mnt 2>/tmp/mount.err; do
    n=$((n + 1))
    if [ $n -ge 10 ]; then
        cat /tmp/mount.err
        finish "FAIL mount -t virtiofs $TAG /mnt"
    fi
    sleep 1
done
say "mounted virtiofs $TAG on /mnt ($(grep -c 'requests' /proc/interrupts) request queue irqs)"

case $MODE in
    demo)
        say "contents of the share:"
        ls -la /mnt
        for f in /mnt/*; do
            [ -f "$f" ] || continue
            # Show small text files only; binaries would garble the console.
            if [ "$(stat -c %s "$f")" -le 4096 ] && ! grep -q "$(printf '\001')" "$f"; then
                say "--- $f"
                cat "$f"
            fi
        done
        echo "hello from the guest at $(date -u)" >/mnt/guest-was-here.txt \
            || finish "FAIL write guest-was-here.txt"
        df /mnt
        finish PASS ;;
    full|smoke)
        sh /e2e/guest-fs-test.sh "$MODE" /mnt "$TAG"
        rc=$?
        # Interrupts per virtio-fs queue and CPU: shows whether requests were
        # spread over several request queues.
        grep -E 'hiprio|requests' /proc/interrupts | tr -s ' ' | sed 's/^/[e2e] irq:/'
        if [ $rc = 0 ]; then
            finish PASS
        else
            finish "FAIL guest-fs-test.sh reported failures"
        fi ;;
    readonly)
        if sh /e2e/guest-readonly-test.sh /mnt; then finish PASS
        else finish "FAIL guest-readonly-test.sh reported failures"; fi ;;
    options)
        if sh /e2e/guest-options-test.sh /mnt; then finish PASS
        else finish "FAIL guest-options-test.sh reported failures"; fi ;;
    rootless)
        if sh /e2e/guest-rootless-test.sh /mnt; then finish PASS
        else finish "FAIL guest-rootless-test.sh reported failures"; fi ;;
    hotplug)
        if sh /e2e/guest-hotplug-test.sh /mnt; then finish PASS
        else finish "FAIL guest-hotplug-test.sh reported failures"; fi ;;
    reboot)
        sh /e2e/guest-reboot-test.sh "$BOOTS" /mnt "$TAG"
        case $? in
            0) finish PASS ;;
            10) say "reboot -f"; reboot -f; sleep 60 ;;
            11) say "waiting for system_reset from the host"; sleep 300
                finish "FAIL no system_reset from the host" ;;
            *) finish "FAIL guest-reboot-test.sh reported failures" ;;
        esac ;;
    *)
        finish "FAIL unknown e2e.mode=$MODE" ;;
esac
