#!/usr/bin/env python3
"""Sends QMP commands to a QEMU monitor socket, one after the other, and fails on the first error.

usage: qmp.py SOCKET 'COMMAND [JSON-ARGS]'...
e.g.   qmp.py /tmp/qmp.sock 'object-add {"qom-type": "memory-backend-memfd", "id": "m1",
                                          "size": 536870912, "share": true}'
Prints each reply; exit status 0 when every command succeeded.
"""
import json
import socket
import sys


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(sys.argv[1])
    stream = sock.makefile("rw", encoding="utf-8", newline="\n")

    def reply():
        # Skip asynchronous events; return the command's reply.
        while True:
            line = stream.readline()
            if not line:
                raise ConnectionError("QEMU closed the monitor")
            msg = json.loads(line)
            if "return" in msg or "error" in msg:
                return msg

    def execute(cmd, args=None):
        req = {"execute": cmd}
        if args:
            req["arguments"] = args
        stream.write(json.dumps(req) + "\n")
        stream.flush()
        return reply()

    json.loads(stream.readline())  # greeting
    execute("qmp_capabilities")
    for spec in sys.argv[2:]:
        cmd, _, args = spec.partition(" ")
        r = execute(cmd, json.loads(args) if args.strip() else None)
        print(f"[qmp] {cmd}: {json.dumps(r)}")
        if "error" in r:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
