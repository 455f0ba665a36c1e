#!/usr/bin/env python3
"""In-sandbox executor: serves exec / read / write requests on a unix socket.

Runs inside every sandbox (docker container, bwrap, local process). Stdlib only, and plain
enough for any Python 3.6+, because environment images carry whatever /usr/bin/python3 they
were built from. Wire format: a request is a 4-byte big-endian length and a JSON object; each
reply frame is one type byte, a 4-byte length and a payload. Types: b"o" / b"e" output chunks
(only when streaming), b"r" the final JSON result. The first connection of the host is a lease:
when it closes (the host exited or crashed) the agent kills every command and exits, which
lets a container with auto-remove disappear on its own.
"""

import argparse
import base64
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid

CHUNK = 65536
LEASE_GRACE_S = 30.0
_children = set()
_children_lock = threading.Lock()


class Capped(object):
    """Keep the first and last cap/2 bytes of a stream; memory stays flat."""

    def __init__(self, cap):
        self.half = max(cap // 2, 1)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def write(self, data):
        self.total += len(data)
        room = self.half - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > 2 * self.half:
                del self.tail[: len(self.tail) - self.half]

    def value(self):
        tail = bytes(self.tail[-self.half :])
        dropped = self.total - len(self.head) - len(tail)
        text = bytes(self.head).decode("utf-8", "replace")
        if dropped > 0:
            text += "\n[... %d characters truncated ...]\n" % dropped
        return text + tail.decode("utf-8", "replace"), dropped > 0


def recv_exact(conn, n):
    buf = b""
    while len(buf) < n:
        part = conn.recv(n - len(buf))
        if not part:
            raise EOFError()
        buf += part
    return buf


def send_frame(conn, kind, payload):
    conn.sendall(kind + struct.pack(">I", len(payload)) + payload)


def send_result(conn, obj):
    send_frame(conn, b"r", json.dumps(obj).encode("utf-8"))


def kill_tree(proc, marker):
    """SIGKILL the command's process group, then any process still carrying its marker."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    for _ in range(5):
        found = False
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == os.getpid():
                continue
            try:
                with open("/proc/%s/environ" % name, "rb") as fh:
                    env = fh.read().split(b"\0")
            except (IOError, OSError):
                continue
            if marker in env:
                found = True
                try:
                    os.kill(int(name), signal.SIGKILL)
                except OSError:
                    pass
        if not found:
            break
        time.sleep(0.02)


def do_exec(conn, req, workdir):
    eid = uuid.uuid4().hex
    marker = ("HARNESS_EXEC_ID=%s" % eid).encode()
    env = dict(os.environ)
    env.update(req.get("env") or {})
    env["HARNESS_EXEC_ID"] = eid
    timeout = req.get("timeout")
    cap = int(req.get("cap") or (1 << 20))
    stream = bool(req.get("stream"))
    stdin_data = req.get("stdin")
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            req["argv"],
            cwd=req.get("cwd") or workdir,
            env=env,
            stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except (OSError, ValueError) as exc:
        code = 127 if isinstance(exc, FileNotFoundError) else 126
        send_result(
            conn,
            {
                "exit_code": code,
                "stdout": "",
                "stderr": str(exc) + "\n",
                "duration_s": time.monotonic() - start,
                "timed_out": False,
                "truncated": False,
            },
        )
        return
    with _children_lock:
        _children.add(proc)
    if stdin_data is not None:
        data = base64.b64decode(stdin_data)

        def feed():
            try:
                proc.stdin.write(data)
                proc.stdin.close()
            except (IOError, OSError):
                pass

        threading.Thread(target=feed, daemon=True).start()
    out, err = Capped(cap), Capped(cap)
    streams = {proc.stdout.fileno(): (out, b"o"), proc.stderr.fileno(): (err, b"e")}
    conn_fd = conn.fileno()
    deadline = start + timeout if timeout else None
    drain_until = None
    timed_out = False
    client_gone = False
    while streams:
        now = time.monotonic()
        wait = 0.25
        if deadline is not None and not timed_out:
            wait = min(wait, max(0.0, deadline - now))
        if drain_until is not None:
            wait = min(wait, max(0.0, drain_until - now))
        ready, _, _ = select.select(list(streams) + [conn_fd], [], [], wait)
        for fd in ready:
            if fd == conn_fd:
                # The host never sends during an exec: readable means it went away.
                client_gone = True
                continue
            data = os.read(fd, CHUNK)
            if not data:
                del streams[fd]
                continue
            buf, kind = streams[fd]
            buf.write(data)
            if stream:
                try:
                    send_frame(conn, kind, data)
                except (IOError, OSError):
                    client_gone = True
        now = time.monotonic()
        if client_gone:
            kill_tree(proc, marker)
            break
        if deadline is not None and not timed_out and now >= deadline:
            timed_out = True
            kill_tree(proc, marker)
            drain_until = now + 1.0
        elif drain_until is None and proc.poll() is not None:
            # Leftover background jobs may hold the pipes open: drain briefly, then return.
            drain_until = now + 1.0
        if drain_until is not None and now >= drain_until:
            break
    # Background jobs still holding the command's output when it ends belong to it: they go
    # too (a fork bomb would otherwise outlive its exec). Jobs that redirected their output
    # (daemons started with `nohup cmd >log &`) closed our pipes and are left alone.
    if timed_out or client_gone or streams:
        kill_tree(proc, marker)
    code = proc.wait()
    with _children_lock:
        _children.discard(proc)
    for pipe in (proc.stdout, proc.stderr):
        pipe.close()
    if client_gone:
        return
    if code < 0:
        code = 128 - code
    stdout, t1 = out.value()
    stderr, t2 = err.value()
    send_result(
        conn,
        {
            "exit_code": code,
            "stdout": stdout,
            "stderr": stderr,
            "duration_s": time.monotonic() - start,
            "timed_out": timed_out,
            "truncated": t1 or t2,
        },
    )


def do_read(conn, req, workdir):
    path = os.path.join(workdir, req["path"])
    limit = int(req.get("limit") or (64 << 20))
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except (IOError, OSError) as exc:
        send_result(conn, {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)})
        return
    if len(data) > limit:
        send_result(conn, {"ok": False, "error": "file is larger than %d bytes" % limit})
        return
    send_result(conn, {"ok": True, "data": base64.b64encode(data).decode("ascii")})


def do_write(conn, req, workdir):
    path = os.path.join(workdir, req["path"])
    try:
        parent = os.path.dirname(path)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent)
        tmp = "%s.harness-tmp-%s" % (path, uuid.uuid4().hex[:8])
        with open(tmp, "wb") as fh:
            fh.write(base64.b64decode(req["data"]))
        if req.get("mode") is not None:
            os.chmod(tmp, int(req["mode"]))
        elif os.path.exists(path):
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        os.rename(tmp, path)
    except (IOError, OSError) as exc:
        send_result(conn, {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)})
        return
    send_result(conn, {"ok": True})


def shutdown():
    with _children_lock:
        procs = list(_children)
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    os._exit(0)


def handle(conn, workdir, lease_state):
    try:
        size = struct.unpack(">I", recv_exact(conn, 4))[0]
        req = json.loads(recv_exact(conn, size).decode("utf-8"))
        op = req.get("op")
        if op == "lease":
            lease_state["held"] = True
            send_result(
                conn,
                {
                    "ok": True,
                    "pid": os.getpid(),
                    "uid": os.getuid(),
                    "python": sys.version.split()[0],
                },
            )
            while conn.recv(1):
                pass
            shutdown()
        elif op == "exec":
            do_exec(conn, req, workdir)
        elif op == "read":
            do_read(conn, req, workdir)
        elif op == "write":
            do_write(conn, req, workdir)
        elif op == "ping":
            send_result(conn, {"ok": True})
        else:
            send_result(conn, {"ok": False, "error": "unknown op %r" % (op,)})
    except (EOFError, IOError, OSError, ValueError, KeyError):
        pass
    finally:
        try:
            conn.close()
        except OSError:
            pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: shutdown())
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0)
    try:
        server.bind(args.socket + ".tmp")
    finally:
        os.umask(old)
    server.listen(64)
    os.rename(args.socket + ".tmp", args.socket)  # appears only once it accepts
    lease_state = {"held": False}
    started = time.monotonic()
    server.settimeout(1.0)
    while True:
        try:
            conn, _ = server.accept()
        except socket.timeout:
            if not lease_state["held"] and time.monotonic() - started > LEASE_GRACE_S:
                shutdown()
            continue
        conn.settimeout(None)
        threading.Thread(target=handle, args=(conn, args.workdir, lease_state), daemon=True).start()


if __name__ == "__main__":
    main()
