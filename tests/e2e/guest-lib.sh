#!/bin/sh
# What the guest-*-test.sh scripts of the options, rootless and readonly modes share (busybox sh):
# TAP-like result lines, HOST-EXPECT lines for run-e2e.sh, and running commands as another user
# through /e2e/guest-probe. Sourced with `. /e2e/guest-lib.sh`; counts failures in FAILED.
# shellcheck shell=sh

P=/e2e/guest-probe
FAILED=0
ok() { echo "ok - $1"; }
not_ok() { FAILED=$((FAILED + 1)); echo "not ok - $1: $2"; }
note() { echo "# $*"; }
# expect NAME WANT GOT
expect() {
    if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1" "expected '$2', got '$3'"; fi
}
host_expect() { echo "HOST-EXPECT $*"; }
# as UID CMD...: CMD as uid and gid UID, no supplementary groups.
as() { _uid=$1; shift; "$P" as "$_uid" "$_uid" "$@"; }
# works NAME CMD...: CMD must succeed.
works() {
    _name=$1; shift
    if _out=$("$@" 2>&1); then ok "$_name"; else not_ok "$_name" "failed: $_out"; fi
}
# fails NAME WHY CMD...: CMD must fail with the message WHY ("Permission denied", ...).
fails() {
    _name=$1 _why=$2; shift 2
    if _out=$("$@" 2>&1); then
        not_ok "$_name" "succeeded"
    elif echo "$_out" | grep -q "$_why"; then
        ok "$_name: $_why"
    else
        not_ok "$_name" "failed otherwise: $_out"
    fi
}
# Reads go to the daemon, not the guest's caches.
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
