#!/bin/sh
# Memory hot-add under I/O (busybox sh), run by /init in e2e.mode=hotplug with the share on ROOT.
# The guest boots with room for a DIMM (run-guest.sh: -m SIZE,slots=2,maxmem=...) and with
# memhp_default_state=online_movable, so hot-added memory comes online by itself as
# ZONE_MOVABLE, the zone page-cache pages prefer. Steps:
#   1. start a writer copying a 4 MiB pattern into the share, file after file;
#   2. print "E2E-HOTPLUG: ready": the host (run-guest.sh) then adds a memfd backend and a
#      pc-dimm over QMP, which reaches the daemon as a new memory region (ADD_MEM_REG);
#   3. wait until MemTotal grows, keep writing for a while, stop the writer;
#   4. drop the page cache, write and read back a 48 MiB file: with the old memory's page cache
#      gone and ZONE_MOVABLE preferred, its pages (the buffers of the FUSE WRITEs and READs)
#      lie in the hot-added memory; /proc/zoneinfo's Movable zone file pages show it;
#   5. check every file the writer made and the big file (the host checks it too: GUEST-MD5).
# Prints TAP-like lines; exit status 0 only if every check passed.
#
# usage: guest-hotplug-test.sh [ROOT=/mnt]
# shellcheck shell=sh

ROOT=${1:-/mnt}
DIR=$ROOT/hotplug
FAILED=0
ok() { echo "ok - $1"; }
not_ok() { FAILED=$((FAILED + 1)); echo "not ok - $1: $2"; }
md5() { md5sum "$1" 2>/dev/null | cut -d' ' -f1; }
memtotal() { awk '/^MemTotal:/ { print $2 }' /proc/meminfo; }
# Page-cache pages in ZONE_MOVABLE (only hot-added memory is movable here).
movable_file_pages() {
    awk '/^Node .* zone +Movable/ { m = 1; next } /^Node / { m = 0 }
         m && /nr_zone_(in)?active_file/ { n += $2 } END { print n + 0 }' /proc/zoneinfo
}

mkdir -p "$DIR" || { not_ok "mkdir $DIR" failed; exit 1; }
dd if=/dev/urandom of=/tmp/pattern bs=1M count=4 2>/dev/null
want=$(md5 /tmp/pattern)
rm -f /tmp/stop
(
    i=0
    while [ ! -f /tmp/stop ]; do
        cp /tmp/pattern "$DIR/w-$i" || { echo "copy $i failed" >/tmp/writer-error; break; }
        i=$((i + 1))
    done
    echo $i >/tmp/written
) &
writer=$!
sleep 2
before=$(memtotal)
echo "E2E-HOTPLUG: ready (MemTotal $before kB, writer running)"

n=0
while [ "$(memtotal)" -le "$before" ] && [ $n -lt 240 ]; do sleep 0.5; n=$((n + 1)); done
after=$(memtotal)
if [ "$after" -gt "$before" ]; then
    ok "memory hot-added while writing: MemTotal $before -> $after kB"
else
    not_ok "memory hot-add" "MemTotal stayed $before kB for 120 s"
fi
grep -q 'zone *Movable' /proc/zoneinfo && ok "the new memory is online (ZONE_MOVABLE)" \
    || not_ok "new memory online" "no Movable zone in /proc/zoneinfo"
sleep 3 # the writer goes on with the new memory mapped
touch /tmp/stop
wait $writer
written=$(cat /tmp/written 2>/dev/null || echo 0)
if [ -f /tmp/writer-error ]; then not_ok "writer" "$(cat /tmp/writer-error)"
elif [ "$written" -lt 2 ]; then not_ok "writer" "only $written files in the whole run"
else ok "writer ran through the hot-add ($written files)"; fi

sync
echo 3 >/proc/sys/vm/drop_caches
movable0=$(movable_file_pages)
dd if=/dev/urandom of=/tmp/big bs=1M count=48 2>/dev/null
big=$(md5 /tmp/big)
cp /tmp/big "$DIR/big" && sync || not_ok "write big" "cp failed"
rm -f /tmp/big
echo 3 >/proc/sys/vm/drop_caches
got=$(md5 "$DIR/big")
[ "$got" = "$big" ] && ok "48 MiB written and read back through the hot-added memory" \
    || not_ok "big file" "md5 $got, expected $big"
movable1=$(movable_file_pages)
# 48 MiB = 12288 pages read back into the page cache; most must be in the new memory.
if [ $((movable1 - movable0)) -ge 4096 ]; then
    ok "page cache of the share in the hot-added memory: $movable0 -> $movable1 pages"
else
    not_ok "page cache in the hot-added memory" "Movable zone file pages $movable0 -> $movable1"
fi
echo "GUEST-MD5 hotplug/big $big"

i=0
bad=0
while [ $i -lt "$written" ]; do
    [ "$(md5 "$DIR/w-$i")" = "$want" ] || bad=$((bad + 1))
    i=$((i + 1))
done
[ $bad = 0 ] && ok "all $written files written across the hot-add are intact" \
    || not_ok "files written across the hot-add" "$bad of $written differ"
echo "# hotplug test: $FAILED failed checks"
[ $FAILED = 0 ]
