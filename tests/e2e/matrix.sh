#!/usr/bin/env bash
# Runs the guest end-to-end suite against async-virtiofsd in every configuration the daemon must
# serve: --thread-pool-size 0, 1 and 64 on the Debian 12 guest (one request queue), and 4 request
# queues on the Debian 13 guest with 4 vCPUs, where the daemon's per-queue statistics must show
# that more than one request queue served requests. The pool-64 run has xattrs on (daemon --xattr,
# run-e2e.sh --xattr: the guest probe sets and reads them, the host checks one), the others off
# (the probe checks they fail EOPNOTSUPP); it also passes O_DIRECT to the host (--allow-direct-io,
# where the others strip it) and does READ, WRITE and FSYNC through io_uring (--io-engine
# io-uring); pool1 names --io-engine sync, the others take the default (auto). pool0 (6.1) and multiqueue (6.12) have a host tmpfs inside the share
# announced as a submount (its own st_dev in the guest), pool1 the same tmpfs unannounced (one
# st_dev); multiqueue runs its threads under SCHED_BATCH (--scheduling batch). multiqueue's
# guest raises fs.fuse.max_pages_limit where its kernel has it (6.13+); every full run checks
# the daemon offered 1020 pages (queue of 1024 - 4) and the largest WRITE the guest sent: 1020
# pages with a raised limit, 256 (1 MiB) otherwise. The four full runs check
# locks both ways with host processes (run-e2e.sh --host-locks: a host lock blocks the guest; a
# guest process's locks block the host's until it is SIGKILLed or closes the file, seen by
# host-lock-peer.py). Then a guest that reboots three times in one QEMU
# process (reboot -f, then system_reset from the monitor, then a driver rebind; 6.1, and 6.12
# with 4 queues), one that gets memory hot-added under I/O, and a 6.12 guest of a --readonly
# --cache=never share that must fail every change with EROFS and a shared mmap with ENODEV
# (direct I/O without --allow-mmap). Then `rootless` (6.12): the daemon run as the host user
# avfs-e2e (setup.sh), which owns the share, in a user namespace with its subordinate ids, and
# --translate-uid/gid rules (guest-rootless-test.sh): guest root's files are avfs-e2e's on the
# host, chown and a guest user's new files land on the translated host ids, squashed users are
# the daemon's user, a forbidden id is EPERM and an id outside the namespace EINVAL, host ids
# show translated back (host root as the overflow id, out of the guest root's reach), ACL
# entries name guest ids in the guest and translated ids on the host and are enforced; with
# --cache=never --allow-mmap a shared writable mmap reaches the host, and --preserve-noatime
# keeps the host atime of an O_NOATIME read and fails one the host refuses (EPERM); and
# `rootless-6.1`, the same for the 6.1 guest, which refuses shared mmap of direct-I/O files
# whatever the daemon offers (ENODEV). Last, `options` (6.12) and `options-6.1`: one
# daemon with --posix-acl, --xattrmap=/map/trusted./user.virtiofs./, --killpriv-v2,
# --max-inodes 100 --max-bytes 4M and --security-label, and a guest booted with
# security=selinux (guest-options-test.sh): ACLs enforced for non-root guest users and
# inherited, trusted.* stored as user.virtiofs.trusted.*, SUID/SGID cleared by the daemon on a
# non-owner's write, O_TRUNC and truncate, df showing the quota and EDQUOT past it with nothing
# more on the host, and each new node's SELinux label stored on the host; the daemon's log must
# show POSIX_ACL, DONT_MASK, SETXATTR_EXT, HANDLE_KILLPRIV_V2 and SECURITY_CTX agreed. Ends with
# "e2e matrix: N passed, N failed".
#
# usage: tests/e2e/matrix.sh [path/to/async-virtiofsd [NAME...]]
#   (default: target/debug/async-virtiofsd; NAMEs run only those configurations, e.g. pool0 multiqueue)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BIN=${1:-$REPO/target/debug/async-virtiofsd}
shift $(($# > 0 ? 1 : 0))
ONLY=" $* "
[ -x "$BIN" ] || { echo "matrix: no daemon binary at $BIN (run cargo build)" >&2; exit 2; }
LOGS=$REPO/target/e2e-logs/matrix
rm -rf "$LOGS"
mkdir -p "$LOGS"

bash "$HERE/setup.sh"

passed=0
failed=0
failures=()

# run NAME KERNEL CPUS QUEUES "DAEMON OPTIONS" [run-e2e options...]
run() {
    local name=$1 kernel=$2 cpus=$3 queues=$4 flags=$5
    shift 5
    if [ "$ONLY" != "  " ] && [[ $ONLY != *" $name "* ]]; then return 0; fi
    local dir=$LOGS/$name start rc
    echo "=== e2e $name: kernel $kernel, $cpus vCPUs, $queues request queue(s), $flags $*"
    start=$(date +%s)
    local attempt
    for attempt in 1 2; do
        rc=0
        rm -rf "$dir"
        # Trace logging of the pipeline records every request's opcode (checked below).
        bash "$HERE/run-e2e.sh" --no-setup --kernel "$kernel" --cpus "$cpus" --queues "$queues" \
            --mode full --log-dir "$dir" "$@" \
            --daemon-cmd "env RUST_LOG=info,virtiofs_pipeline=trace,virtiofs_fuse=trace $BIN --socket-path={socket} --shared-dir={shared} $flags" \
            >"$dir.out" 2>&1 || rc=$?
        # Multi-vCPU TCG occasionally crashes the guest kernel during early boot (seen: an int3
        # Oops in sched_clock_cpu from an initcall). Retry once, but only when the guest kernel
        # panicked before it mounted the share and the daemon served nothing: a failure that
        # involves the daemon is never retried.
        if [ "$rc" != 0 ] && [ "$attempt" = 1 ] && guest_crashed_before_mount "$dir"; then
            echo "    (guest kernel crashed during boot before mounting the share; retrying once)"
            cp "$dir/serial.log" "$dir.boot-crash.log" 2>/dev/null || true
            continue
        fi
        break
    done
    grep -E '^(guest|host|daemon|e2e):|not ok' "$dir.out" | sed 's/^/    /' || true
    # What the daemon says it served, per queue (logged at shutdown), and its memory map.
    grep -oE 'queue=[0-9]+ requests=[0-9]+' "$dir/daemon.log" | sed 's/^/    /' || true
    grep -E 'guest memory mapped' "$dir/daemon.log" | tail -n 1 | sed 's/^.*INFO /    /' || true
    [ "$rc" = 0 ] || echo "    not ok - run-e2e.sh failed (exit $rc)"
    check_daemon_log "$dir/daemon.log" "$queues" "$flags $*" || rc=1
    echo "    $(( $(date +%s) - start ))s, logs in $dir"
    if [ "$rc" = 0 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failures+=("$name")
        tail -n 30 "$dir.out" | sed 's/^/    | /'
    fi
}

# True when the guest kernel panicked before mounting the share and the daemon served no request.
guest_crashed_before_mount() {
    local dir=$1
    grep -q 'Kernel panic' "$dir/serial.log" 2>/dev/null &&
        ! grep -q 'mounted virtiofs' "$dir/serial.log" &&
        grep -q 'request pipeline stopped requests=0 ' "$dir/daemon.log" 2>/dev/null
}

min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }

# What the daemon's log must show for the options a configuration uses.
check_daemon_log() {
    local log=$1 queues=$2 opts=$3 ok=0 n
    count() { grep -c "$1" "$log" || true; }
    # log_has PATTERN OK-TEXT NOT-OK-TEXT
    log_has() {
        if grep -q "$1" "$log"; then echo "    ok - $2"; else echo "    not ok - $3"; ok=1; fi
    }
    if [ "$queues" -gt 1 ]; then
        n=$(grep -oE 'request_queues_used=[0-9]+' "$log" | cut -d= -f2 || true)
        if [ "${n:-0}" -ge 2 ]; then
            echo "    ok - $n of $queues request queues served requests"
        else
            echo "    not ok - only ${n:-0} of $queues request queues served requests"; ok=1
        fi
    fi
    # Reboot mode: one FUSE session per boot plus one for the remount after the last boot's
    # driver rebind (26 = INIT), each boot's session ended by the next boot's INIT (QEMU 7.2
    # sends no RESET_DEVICE), none refused.
    if [[ $opts == *"--mode reboot"* ]]; then
        local boots=${opts##*--boots }
        boots=${boots%% *}
        # Each mount of a boot is one INIT. Multi-vCPU TCG now and then panics a guest kernel
        # after it mounted (the int3 Oops noted in run() below); QEMU then reboots it, which is
        # one more boot, mount and abandoned session, so count the mounts the guest reported.
        local serial mounts
        serial=$(dirname "$log")/serial.log
        mounts=$(grep -c '^\[e2e\] mounted virtiofs' "$serial" 2>/dev/null || true)
        if [ "${mounts:-0}" -gt "$boots" ]; then
            echo "    (the guest kernel crashed and rebooted $((mounts - boots)) extra time(s): $(grep -c 'Kernel panic' "$serial" || true) panic(s) in serial.log)"
        elif [ "${mounts:-0}" -lt "$boots" ]; then
            echo "    not ok - $boots boots but the guest reported ${mounts:-0} mounts"; ok=1
        fi
        n=$(count 'opcode=26 ')
        if [ "$n" = $((mounts + 1)) ]; then
            echo "    ok - $mounts boots and a driver rebind, $n FUSE_INITs"
        else
            echo "    not ok - $mounts boots and a rebind but $n FUSE_INITs"; ok=1
        fi
        n=$(count 'FUSE_INIT in a live session')
        if [ "$n" = $((mounts - 1)) ]; then
            echo "    ok - $n abandoned sessions ended at the next boot's INIT"
        else
            echo "    not ok - expected $((mounts - 1)) abandoned sessions ended, the log has $n"; ok=1
        fi
        if grep -q 'refused: no FUSE session' "$log"; then
            echo "    not ok - requests refused for lack of a session"; ok=1
        fi
    # Hotplug mode: the DIMM reached the daemon as a second memory region.
    elif [[ $opts == *"--mode hotplug"* ]]; then
        log_has 'guest memory mapped.*regions=2' \
            "the hot-added DIMM was mapped as a second memory region" \
            "no second memory region after the hot-add"
    # FUSE opcodes: 28 READDIR, 44 READDIRPLUS.
    elif [[ $opts == *--no-readdirplus* ]]; then
        if [ "$(count 'opcode=44')" = 0 ] && [ "$(count 'opcode=28')" -gt 0 ]; then
            echo "    ok - --no-readdirplus: the guest used READDIR only"
        else
            echo "    not ok - --no-readdirplus: READDIRPLUS $(count 'opcode=44'), READDIR $(count 'opcode=28')"; ok=1
        fi
    elif [ "$(count 'opcode=44')" -gt 0 ]; then
        echo "    ok - READDIRPLUS offered and used"
    else
        echo "    not ok - the guest never sent READDIRPLUS"; ok=1
    fi
    # Every guest here has queues of 1024 descriptors (run-guest.sh): INIT offers what a chain
    # of 1024 carries besides the request's headers and arguments.
    log_has 'FUSE session started.*max_pages=1020 max_write=4177920 queue_size=Some(1024)' \
        "INIT offered 1020 pages per READ/WRITE (queue of 1024 - 4)" \
        "INIT did not offer 1020 pages for queues of 1024"
    # Full mode writes with dd oflag=direct, 1 MiB and 4 MiB at a time. The guest kernel takes
    # min(our offer, its limit): fs.fuse.max_pages_limit where it has one (Linux 6.13+; the guest
    # raises it with --guest-max-pages), FUSE_MAX_MAX_PAGES = 256 before (6.1, 6.12).
    if [[ $opts != *"--mode "* ]]; then
        log_has 'WRITE.*size=1048576' "a 1 MiB guest write arrived as one 1 MiB WRITE" \
            "no 1 MiB WRITE reached the daemon (MAX_PAGES not in effect?)"
        local serial limit want largest
        serial=$(dirname "$log")/serial.log
        limit=$(sed -n 's/.*fs\.fuse\.max_pages_limit = \([0-9]*\).*/\1/p' "$serial" | tr -d '\r' | tail -n 1)
        want=$(( $(min "${limit:-256}" 1020) * 4096 ))
        largest=$(grep -oE 'dispatch: WRITE .* size=[0-9]+' "$log" | grep -oE '[0-9]+$' | sort -n | tail -n 1)
        if [ "${largest:-0}" = "$want" ]; then
            echo "    ok - largest WRITE $largest bytes (guest fs.fuse.max_pages_limit ${limit:-absent})"
        else
            echo "    not ok - largest WRITE ${largest:-none}, expected $want (guest fs.fuse.max_pages_limit ${limit:-absent})"; ok=1
        fi
    fi
    # Each "agreed:" pattern stops at the ';' that ends the list: the guest's offer follows it.
    if [[ $opts == *--writeback* ]]; then
        log_has 'FUSE session started; agreed: [^;]*WRITEBACK_CACHE' "--writeback: WRITEBACK_CACHE negotiated" \
            "--writeback: WRITEBACK_CACHE not negotiated"
    fi
    # DIRECT_IO_ALLOW_MMAP is offered by guests from Linux 6.6 (not the 6.1 one).
    if [[ $opts == *--allow-mmap* ]]; then
        if grep -q 'the guest offered: .*\bDIRECT_IO_ALLOW_MMAP\b' "$log"; then
            log_has 'FUSE session started; agreed: [^;]*\bDIRECT_IO_ALLOW_MMAP[ ;]' \
                "INIT agreed DIRECT_IO_ALLOW_MMAP" "INIT did not agree DIRECT_IO_ALLOW_MMAP"
        else
            echo "    ok - the guest does not offer DIRECT_IO_ALLOW_MMAP (Linux before 6.6)"
        fi
    fi
    if [[ $opts == *"--mode rootless"* ]]; then
        log_has 'FUSE session started; agreed: [^;]*\bPOSIX_ACL[ ;]' "INIT agreed POSIX_ACL" \
            "INIT did not agree POSIX_ACL"
    fi
    if [[ $opts == *"--mode options"* ]]; then
        local flag
        for flag in POSIX_ACL DONT_MASK SETXATTR_EXT HANDLE_KILLPRIV_V2 SECURITY_CTX; do
            log_has "FUSE session started; agreed: [^;]*\b$flag[ ;]" "INIT agreed $flag" \
                "INIT did not agree $flag"
        done
    fi
    if [[ $opts == *"--mem 5G"* ]]; then
        log_has 'guest memory mapped.*regions=2' \
            "guest memory in two regions (below and above 4 GiB)" \
            "expected two guest memory regions"
    fi
    if grep -q 'panicked' "$log"; then
        echo "    not ok - the daemon panicked"; ok=1
    fi
    return $ok
}

# Each configuration also covers one cache mode and the options that change what the guest sees.
run pool0 6.1 2 1 "--thread-pool-size=0 --cache=always --writeback --announce-submounts" \
    --host-locks --submount announced
run pool1 6.1 2 1 "--thread-pool-size=1 --cache=never --no-readdirplus --io-engine sync" --host-locks --submount plain
run pool64 6.1 2 1 "--thread-pool-size=64 --xattr --allow-direct-io --io-engine io-uring" --xattr --host-locks --direct-io
run multiqueue 6.12 4 4 "--thread-pool-size=64 --cache=metadata --announce-submounts --scheduling batch" --mem 5G \
    --host-locks --submount announced --guest-max-pages 1024
# A guest that reboots (reboot -f, then system_reset; writes in flight, no unmount) twice in one
# QEMU process, then rebinds its driver.
run reboot 6.1 2 1 "--thread-pool-size=64" --mode reboot --boots 3
run reboot-multiqueue 6.12 4 4 "--thread-pool-size=0 --cache=never" --mode reboot --boots 3
# 512 MiB hot-added (QMP object-add + device_add pc-dimm) while the guest writes.
run hotplug 6.1 2 1 "--thread-pool-size=64" --mode hotplug
# --readonly: the guest reads, and every kind of change fails EROFS; the share is unchanged.
# --cache=never without --allow-mmap: a shared mapping fails ENODEV, a private one reads.
run readonly 6.12 2 1 "--readonly --thread-pool-size=64 --cache=never" --mode readonly
# A daemon run as the unprivileged host user avfs-e2e, which owns the share: namespace id 0 is
# avfs-e2e, 1..65536 its subordinate ids ({uid} ... {subgid}: run-e2e.sh --daemon-user);
# guest 1000..1009 are namespace 2000..2009 both ways, 1010..1019 squashed to the namespace's
# root, 1500 forbidden, in owners and in ACL entries (--posix-acl). Also shared mmap with
# --cache=never --allow-mmap, and --preserve-noatime (guest-rootless-test.sh).
ROOTLESS="--uid-map=:0:{uid}:1: --uid-map=:1:{subuid}:65536: --gid-map=:0:{gid}:1:"
ROOTLESS+=" --gid-map=:1:{subgid}:65536:"
for kind in uid gid; do
    ROOTLESS+=" --translate-$kind=map:1000:2000:10 --translate-$kind=squash-guest:1010:0:10"
    ROOTLESS+=" --translate-$kind=forbid-guest:1500:1"
done
ROOTLESS+=" --cache=never --allow-mmap --preserve-noatime --posix-acl"
run rootless 6.12 2 1 "$ROOTLESS" --mode rootless --daemon-user avfs-e2e
# The same on 6.1, which has no DIRECT_IO_ALLOW_MMAP: a shared mapping is ENODEV there.
run rootless-6.1 6.1 2 1 "$ROOTLESS" --mode rootless --daemon-user avfs-e2e
# The options that change what a guest sees, in one daemon (guest-options-test.sh): ACLs
# enforced for non-root guest users, trusted.* kept as user.virtiofs.trusted.* on the host,
# SUID/SGID cleared by the daemon, the quota (statfs, EDQUOT, nothing past it on the host), and
# the labels of a guest booted with SELinux stored on the host.
# The 6.1 guest (FUSE 7.38 in Debian's build) negotiates and passes all of it as well.
OPTIONS="--posix-acl --xattrmap=/map/trusted./user.virtiofs./ --killpriv-v2 --max-inodes 100"
OPTIONS+=" --max-bytes 4M --security-label"
run options 6.12 2 1 "$OPTIONS" --mode options
run options-6.1 6.1 2 1 "$OPTIONS" --mode options

[ "$failed" = 0 ] || echo "failed configurations: ${failures[*]}"
echo "e2e matrix: $passed passed, $failed failed"
[ "$failed" = 0 ]
