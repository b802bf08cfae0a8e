#!/usr/bin/env bash
# The Debian package: build it (dist/build-deb.sh), install it with dpkg -i, check what it put
# where, serve a real guest with the installed /usr/libexec/async-virtiofsd (e2e rig, smoke
# mode) and with its units under a real systemd (tests/systemd/run.sh), then remove it. Run as root on Debian 12. Ends with "package: N passed, N failed".
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
cd "$REPO"
passed=0
failed=0
check() { if eval "$2"; then echo "ok - $1"; passed=$((passed + 1)); else echo "not ok - $1"; failed=$((failed + 1)); fi; }

# man renders the installed page below.
command -v man >/dev/null || { apt-get update -q >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -q man-db >/dev/null; }
DEB=$(bash dist/build-deb.sh | tail -n 1)
check "package built ($DEB)" "[ -f '$DEB' ]"
dpkg -i "$DEB" >/dev/null
trap 'dpkg -r async-virtiofsd >/dev/null 2>&1 || true' EXIT
for f in /usr/libexec/async-virtiofsd /usr/share/qemu/vhost-user/50-async-virtiofsd.json \
         /lib/systemd/system/async-virtiofsd@.service /lib/systemd/system/async-virtiofsd@.socket \
         /usr/share/man/man1/async-virtiofsd.1.gz /usr/share/bash-completion/completions/async-virtiofsd \
         /usr/share/zsh/vendor-completions/_async-virtiofsd /usr/share/fish/vendor_completions.d/async-virtiofsd.fish; do
    check "installed $f" "[ -e '$f' ]"
done
check "the discovery file names the installed binary" \
    "python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d[\"type\"]==\"fs\" and d[\"binary\"]==\"/usr/libexec/async-virtiofsd\"' /usr/share/qemu/vhost-user/50-async-virtiofsd.json"
check "the man page documents --thread-pool-size" \
    "zcat /usr/share/man/man1/async-virtiofsd.1.gz | grep -q -- 'thread\\\\-pool\\\\-size\\|thread-pool-size'"
check "the man page renders and has its EXIT STATUS and EXAMPLES sections" \
    "MANWIDTH=100 man -l /usr/share/man/man1/async-virtiofsd.1.gz 2>/dev/null | grep -q '^EXIT STATUS' &&
     MANWIDTH=100 man -l /usr/share/man/man1/async-virtiofsd.1.gz 2>/dev/null | grep -q '^EXAMPLES'"
# What bash completion would offer after "--cach" and after "--cache=": the option, then its values.
complete_bash() {
    bash -c 'source /usr/share/bash-completion/completions/async-virtiofsd
             COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
             _async__virtiofsd "$1" "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}"; echo "${COMPREPLY[@]}"' _ "$@"
}
check "bash completes --cach to --cache" "complete_bash /usr/libexec/async-virtiofsd --cach | grep -qw -- --cache"
check "bash completes the values of --cache" "complete_bash async-virtiofsd --cache '' | grep -qw metadata"
check "bash registers the completion for the installed path" \
    "bash -c 'source /usr/share/bash-completion/completions/async-virtiofsd; complete -p /usr/libexec/async-virtiofsd' >/dev/null"
check "--print-capabilities of the installed binary" \
    "/usr/libexec/async-virtiofsd --print-capabilities | grep -q '\"fs\"'"
if command -v systemd-analyze >/dev/null; then
    check "unit files pass systemd-analyze verify" \
        "SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no /lib/systemd/system/async-virtiofsd@test.service /lib/systemd/system/async-virtiofsd@test.socket"
fi
check "the installed daemon serves a guest (e2e smoke, 6.1)" \
    "bash tests/e2e/run-e2e.sh --kernel 6.1 --mode smoke --log-dir target/e2e-logs/package \
        --daemon-cmd '/usr/libexec/async-virtiofsd --socket-path={socket} --shared-dir={shared}' >target/e2e-logs/package.out 2>&1"
check "the installed units under a real systemd (nspawn): socket activation, READY=1, two guests" \
    "bash tests/systemd/run.sh >target/e2e-logs/systemd.out 2>&1"
dpkg -r async-virtiofsd >/dev/null
trap - EXIT
check "dpkg -r removes the binary" "[ ! -e /usr/libexec/async-virtiofsd ]"
echo "package: $passed passed, $failed failed"
[ "$failed" = 0 ]
