#!/usr/bin/env bash
# The packaged unit files under a real systemd: systemd-nspawn boots this machine's own systemd
# as PID 1 of a container (--volatile=yes: a tmpfs root with the host's /usr read-only), with the
# installed package's async-virtiofsd@.socket wanted at boot. A host QEMU guest then connects to
# the socket twice; each time systemd must start async-virtiofsd@vm1.service by socket
# activation, see READY=1 (Type=notify) under the unit's hardening, and the daemon must serve
# the guest and exit 0 when it disconnects, leaving the socket listening for the next one.
#
# Needs the Debian package installed (tests/package/run.sh runs this while it is) and root.
# Installs systemd-container if missing. Ends with "systemd: N passed, N failed".
#
# usage: tests/systemd/run.sh [--kernel 6.1|6.12]
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
KERNEL=6.1
[ "${1:-}" = --kernel ] && KERNEL=$2
[ -x /usr/libexec/async-virtiofsd ] || { echo "systemd: the package is not installed" >&2; exit 2; }
command -v systemd-nspawn >/dev/null || {
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q systemd-container >/dev/null
}

passed=0
failed=0
check() { if eval "$2"; then echo "ok - $1"; passed=$((passed + 1)); else echo "not ok - $1"; failed=$((failed + 1)); fi; }

# Not under /tmp: the container's systemd mounts its own /tmp.
WORK=$(mktemp -d "$REPO/target/systemd-test.XXXXXX")
LOGS=$REPO/target/e2e-logs/systemd
mkdir -p "$WORK/run" "$WORK/conf" "$WORK/share" "$LOGS"
printf 'hello from the host\n' >"$WORK/share/hello.txt"
echo "SHARED_DIR=/srv/vm1" >"$WORK/conf/vm1.conf"
MACHINE=avfsd-$$
NSPAWN_PID=
# shellcheck disable=SC2317  # invoked via trap
cleanup() {
    if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
        kill -TERM "$NSPAWN_PID" 2>/dev/null || true  # the container's systemd shuts down
        for _ in $(seq 100); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$NSPAWN_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# The share, the socket directory and the instance's configuration are bind mounts, so the
# daemon's writes reach the host and the host's QEMU reaches the socket.
systemd-nspawn --quiet --directory=/ --volatile=yes --machine="$MACHINE" --register=no \
    --keep-unit --bind="$WORK/share:/srv/vm1" --bind="$WORK/run:/run/async-virtiofsd" \
    --bind-ro="$WORK/conf:/etc/async-virtiofsd" --boot \
    systemd.firstboot=off systemd.wants=async-virtiofsd@vm1.socket \
    </dev/null >"$LOGS/container.log" 2>&1 &
NSPAWN_PID=$!
SOCK=$WORK/run/vm1.sock
for _ in $(seq 300); do
    [ -S "$SOCK" ] && break
    kill -0 "$NSPAWN_PID" 2>/dev/null || break
    sleep 0.2
done
check "the container's systemd listens on the instance's socket" "[ -S '$SOCK' ]"
[ -S "$SOCK" ] || { tail -n 30 "$LOGS/container.log"; exit 1; }
LEADER=$(ps -o pid= --ppid "$NSPAWN_PID" | head -n 1 | tr -d ' ')
inside() { nsenter --target "$LEADER" --mount --pid --uts --ipc -- "$@"; }
unit_prop() { inside systemctl show --value -p "$1" async-virtiofsd@vm1.service; }

for boot in 1 2; do
    check "boot $boot: a guest served by the socket-activated daemon" \
        "'$REPO/tests/e2e/run-guest.sh' --socket '$SOCK' --kernel $KERNEL --mode smoke --timeout 600 \
            --log '$LOGS/serial-$boot.log' >'$LOGS/guest-$boot.out' 2>&1"
    # The daemon exits by itself once QEMU disconnects.
    for _ in $(seq 100); do
        [ "$(unit_prop ActiveState)" = inactive ] && break
        sleep 0.2
    done
    check "boot $boot: the service ran and exited 0 (Result=$(unit_prop Result), status $(unit_prop ExecMainStatus))" \
        "[ '$(unit_prop Result)' = success ] && [ '$(unit_prop ExecMainStatus)' = 0 ] && [ '$(unit_prop ActiveState)' = inactive ]"
    check "boot $boot: the socket still listens" \
        "[ \"\$(inside systemctl is-active async-virtiofsd@vm1.socket)\" = active ]"
done
inside journalctl --no-pager -o short-monotonic -u async-virtiofsd@vm1.service >"$LOGS/journal.log" 2>&1 || true
# systemd logs "Started" for a Type=notify unit only after READY=1.
check "systemd saw READY=1 for both runs (journal: Started ... twice)" \
    "[ \"\$(grep -c 'Started async-virtiofsd@vm1.service' '$LOGS/journal.log')\" = 2 ]"
check "the daemon's own log reached the journal" \
    "grep -q 'Waiting for vhost-user socket connection' '$LOGS/journal.log'"
check "the guest's writes reached the host's share" "[ -n \"\$(find '$WORK/share' -newer '$WORK/conf/vm1.conf' -type f | head -n 1)\" ]"
echo "systemd: $passed passed, $failed failed (logs: $LOGS)"
[ "$failed" = 0 ]
