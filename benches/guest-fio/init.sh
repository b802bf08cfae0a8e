#!/bin/sh
# /init of the guest-fio initramfs (busybox sh + fio): mounts the virtio-fs share "myfs" on
# /mnt, runs the fio jobs named on the kernel command line against /mnt/fio-data.bin (made by
# the host) and prints one line per job
#   FIO-RESULT <job> <iops> <bw_kib_s>
# then "FIO-DONE" and powers off. Kernel command line:
#   fio.jobs=JOB,JOB...   JOB = randread4k-QD | randwrite4k-QD | seqread1m-QD
#   fio.runtime=SECS      measured seconds per job (after 2 s of ramp)
# QD is fio's --numjobs (synchronous O_DIRECT psync jobs), as in benches/run's fio mode.
# shellcheck shell=sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
echo
mount -t tmpfs -o size=64m tmpfs /tmp
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/ TZ=UTC0 LD_LIBRARY_PATH=/fio-lib

finish() {
    cd /
    grep -q ' /mnt virtiofs ' /proc/mounts && umount /mnt
    echo "FIO-DONE $*"
    poweroff -f
    sleep 60
}

JOBS=randread4k-1
RUNTIME=10
read -r cmdline </proc/cmdline
for word in $cmdline; do
    case $word in
        fio.jobs=*) JOBS=${word#fio.jobs=} ;;
        fio.runtime=*) RUNTIME=${word#fio.runtime=} ;;
    esac
done
if [ -f /lib/modules/e2e/order ]; then
    while read -r mod; do
        [ -n "$mod" ] && insmod "/lib/modules/e2e/$mod.ko"
    done </lib/modules/e2e/order
fi
n=0
until mount -t virtiofs myfs /mnt 2>/tmp/mount.err; do
    n=$((n + 1))
    [ $n -lt 10 ] || { cat /tmp/mount.err; finish "FAIL mount"; }
    sleep 1
done
echo "[fio] kernel $(uname -r), $(nproc) cpus, $(grep -c requests /proc/interrupts) request queue irqs"
[ -f /mnt/fio-data.bin ] || finish "FAIL no /mnt/fio-data.bin"
SIZE=$(stat -c %s /mnt/fio-data.bin)

for job in $(echo "$JOBS" | tr ',' ' '); do
    qd=${job##*-}
    case ${job%-*} in
        randread4k) rw=randread bs=4k ;;
        randwrite4k) rw=randwrite bs=4k ;;
        seqread1m) rw=read bs=1m ;;
        *) echo "[fio] unknown job $job"; continue ;;
    esac
    # Each job on its own slice of the file, as benches/run's fio mode does.
    slice=$((SIZE / qd / 1048576 * 1048576))
    line=$(fio --name="$job" --filename=/mnt/fio-data.bin --rw="$rw" --bs="$bs" --direct=1 \
        --ioengine=psync --numjobs="$qd" --size="$slice" --offset_increment="$slice" \
        --time_based --runtime="$RUNTIME" --ramp_time=2 --group_reporting \
        --output-format=terse --terse-version=3 2>/tmp/fio.err | tail -n1)
    # fio's terse v3 fields: read bandwidth (KiB/s) 7, read IOPS 8; write bandwidth 48, IOPS 49.
    if [ "$rw" = randwrite ]; then
        echo "$line" | awk -F';' -v j="$job" '{ print "FIO-RESULT", j, $49, $48 }'
    else
        echo "$line" | awk -F';' -v j="$job" '{ print "FIO-RESULT", j, $8, $7 }'
    fi
    [ -s /tmp/fio.err ] && sed 's/^/[fio] stderr: /' /tmp/fio.err
done
finish PASS
