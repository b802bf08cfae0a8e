#!/usr/bin/env python3
"""Host side of the guest-locks handshake (run-e2e.sh --host-locks; the guest side is
tests/guest-probe's --guest-locks, locks::guest_locks).

usage: host-lock-peer.py DIR OUT [--first-wait SECS] [--step-wait SECS] [--grant-wait SECS]

DIR is the share's guest-locks/ with the file `target`. Guest and host take turns through new
files in DIR (never a rewritten one: the guest may cache what it read):

  guest 1-held       a guest process holds F_SETLK F_WRLCK and flock LOCK_EX on target
  host  2-host-checked  F_SETLK, F_OFD_SETLK and flock LOCK_EX|LOCK_NB of this process must
                     fail with EAGAIN / EWOULDBLOCK
  guest 3-killed     the holder was killed with SIGKILL
  host  4-host-took  each of the three must be granted (tried again until --grant-wait: the
                     guest kernel's FLUSH and RELEASE of the dead process reach the daemon in
                     their own time); what was granted is released at once
  guest 5-held       a new guest process holds both locks
  host  6-host-checked  as 2-host-checked
  guest 7-closed     the holder closed the file and still runs
  host  8-host-took  as 4-host-took
  guest abort        the guest gave up (its reason inside); the peer records it and stops

The host's answers are written under a temporary name and renamed into place, so the guest
never sees half of one. Everything it observes goes to OUT, one line each, "ok - NAME" or
"not ok - NAME: DETAIL" (NAME has no ": "; plus "# " notes), and "DONE" when the handshake
completed; run-e2e.sh
checks OUT after the run. Waits are bounded: the first by --first-wait (the guest boots and
runs its other checks first), each later one by --step-wait; the peer never outlives them.
"""

import argparse
import errno
import fcntl
import os
import struct
import sys
import time

# struct flock on x86_64 Linux: short l_type, short l_whence, off_t l_start, off_t l_len,
# pid_t l_pid, padded to 32 bytes.
FLOCK = "hhqqi4x"
CONFLICT = (errno.EAGAIN, errno.EACCES)


def try_posix(path):
    """A classic (process-owned) F_SETLK F_WRLCK over the whole file; released if granted."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def try_ofd(path):
    """An open file description F_OFD_SETLK F_WRLCK; released if granted."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack(FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack(FLOCK, fcntl.F_UNLCK, os.SEEK_SET, 0, 0, 0))
    finally:
        os.close(fd)


def try_flock(path):
    """flock LOCK_EX|LOCK_NB; released if granted."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


ATTEMPTS = [
    ("F_SETLK F_WRLCK", try_posix),
    ("F_OFD_SETLK F_WRLCK", try_ofd),
    ("flock LOCK_EX|LOCK_NB", try_flock),
]


def attempt(fn, path):
    """None when granted (and released), else the errno."""
    try:
        fn(path)
        return None
    except OSError as e:
        return e.errno


def holder_of(path):
    """What a classic F_GETLK reports (a note: the daemon's locks are OFD locks, pid -1)."""
    fd = os.open(path, os.O_RDWR)
    try:
        res = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack(FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
    finally:
        os.close(fd)
    typ, _, start, length, pid = struct.unpack(FLOCK, res)
    if typ == fcntl.F_UNLCK:
        return "no conflicting POSIX lock"
    kind = {fcntl.F_WRLCK: "write", fcntl.F_RDLCK: "read"}.get(typ, str(typ))
    return f"{kind} lock [{start}, +{length or 'EOF'}) held by pid {pid}"


class Peer:
    def __init__(self, args):
        self.dir = args.dir
        self.target = os.path.join(args.dir, "target")
        self.out = open(args.out, "a", buffering=1)
        self.args = args

    def record(self, line):
        self.out.write(line + "\n")
        return line

    def answer(self, name, lines):
        tmp = os.path.join(self.dir, f".{name}.tmp")
        with open(tmp, "w") as f:
            f.write("".join(line + "\n" for line in lines))
        os.rename(tmp, os.path.join(self.dir, name))

    def wait_for(self, name, secs):
        """True once the guest made `name`; False (recorded) on timeout or a guest abort."""
        deadline = time.monotonic() + secs
        path = os.path.join(self.dir, name)
        abort = os.path.join(self.dir, "abort")
        while True:
            if os.path.exists(path):
                return True
            if os.path.exists(abort):
                with open(abort) as f:
                    why = f.read().strip()
                self.record(f"not ok - guest locks handshake: the guest gave up before {name}: {why}")
                return False
            if time.monotonic() >= deadline:
                self.record(f"not ok - guest locks handshake: no {name} from the guest within {secs:.0f}s")
                return False
            time.sleep(0.05)

    def check_held(self, how, step):
        """The guest's holder has both locks: every attempt must meet the conflict."""
        lines = [self.record(f"# {how} round, host F_GETLK: {holder_of(self.target)}")]
        for name, fn in ATTEMPTS:
            err = attempt(fn, self.target)
            want = "EWOULDBLOCK" if name.startswith("flock") else "EAGAIN"
            check = f"guest locks ({how} round) host {name} blocked by the guest process's locks ({want})"
            if err in CONFLICT:
                lines.append(self.record(f"ok - {check}"))
            elif err is None:
                lines.append(self.record(f"not ok - {check}: granted (the host does not see the guest's lock)"))
            else:
                lines.append(self.record(f"not ok - {check}: {errno.errorcode.get(err, err)}"))
        self.answer(step, lines)

    def check_released(self, how, step):
        """The guest's holder let go (died, or closed the file): every attempt must be granted."""
        start = time.monotonic()
        deadline = start + self.args.grant_wait
        pending = dict(ATTEMPTS)
        granted = {}
        last = {}
        while pending:
            for name, fn in list(pending.items()):
                err = attempt(fn, self.target)
                if err is None:
                    granted[name] = time.monotonic() - start
                    del pending[name]
                else:
                    last[name] = err
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        let_go = "was SIGKILLed" if how == "SIGKILL" else "closed the file"
        lines = []
        for name, _ in ATTEMPTS:
            check = f"guest locks ({how} round) host {name} granted once the guest process {let_go}"
            if name in granted:
                lines.append(self.record(f"ok - {check} (after {granted[name]:.1f}s)"))
            else:
                err = errno.errorcode.get(last[name], last[name])
                lines.append(self.record(
                    f"not ok - {check}: still {err} after {self.args.grant_wait:.0f}s"))
        self.answer(step, lines)

    def run(self):
        steps = [
            ("SIGKILL", "1-held", "2-host-checked", "3-killed", "4-host-took"),
            ("close", "5-held", "6-host-checked", "7-closed", "8-host-took"),
        ]
        first = True
        for how, held, checked, released, took in steps:
            if not self.wait_for(held, self.args.first_wait if first else self.args.step_wait):
                return 1
            first = False
            self.check_held(how, checked)
            if not self.wait_for(released, self.args.step_wait):
                return 1
            self.check_released(how, took)
        self.record("DONE")
        return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir")
    p.add_argument("out")
    p.add_argument("--first-wait", type=float, default=900)
    p.add_argument("--step-wait", type=float, default=240)
    p.add_argument("--grant-wait", type=float, default=60)
    args = p.parse_args()
    return Peer(args).run()


if __name__ == "__main__":
    sys.exit(main())
