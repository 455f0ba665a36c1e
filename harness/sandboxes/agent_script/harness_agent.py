#!/usr/bin/env python3
"""In-sandbox executor: serves exec / read / write / tree-copy requests on a unix socket.

Runs inside every sandbox (docker container, bwrap, local process). Stdlib only, and plain
enough for any Python 3.6+, because environment images carry whatever /usr/bin/python3 they
were built from. Wire format: a request is a 4-byte big-endian length and a JSON object; each
reply frame is one type byte, a 4-byte length and a payload. Types: b"o" / b"e" output chunks
(only when streaming), b"r" the final JSON result. The first connection of the host is a lease:
when it closes (the host exited or crashed) the agent kills every command and exits, which
lets a container with auto-remove disappear on its own.

With --run-as UID:GID the agent is the only process of its uid: every command, file access
and kill happens in a child that has dropped to that uid (no groups, no capabilities), so
sandboxed code can neither signal, trace nor replace the agent, nor write its socket's
directory.
"""

import argparse
import base64
import json
import os
import pwd
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
import warnings

CHUNK = 65536
LEASE_GRACE_S = 30.0
MAX_REQUEST = 1 << 30
RLIMITS = {"nproc": resource.RLIMIT_NPROC, "as": resource.RLIMIT_AS, "fsize": resource.RLIMIT_FSIZE}
_children = set()
_children_lock = threading.Lock()
_state = {"lease": False, "run_as": None}
# as_user forks a threaded process; its child only runs code that takes no lock.
warnings.filterwarnings("ignore", category=DeprecationWarning)


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
        part = conn.recv(min(n - len(buf), 1 << 20))
        if not part:
            raise EOFError()
        buf += part
    return buf


def send_frame(conn, kind, payload):
    conn.sendall(kind + struct.pack(">I", len(payload)) + payload)


def send_result(conn, obj):
    send_frame(conn, b"r", json.dumps(obj).encode("utf-8"))


def drop_privileges():
    uid, gid = _state["run_as"]
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def user_kwargs():
    """Popen arguments that start a command as the sandbox user (nothing without --run-as)."""
    if _state["run_as"] is None:
        return {}
    if sys.version_info >= (3, 9):  # done in C after fork: safe in a threaded process
        uid, gid = _state["run_as"]
        return {"user": uid, "group": gid, "extra_groups": []}
    return {"preexec_fn": drop_privileges}


def as_user(fn, *args):
    """fn(*args) in a child that dropped to the sandbox user; its JSON-able value comes back."""
    if _state["run_as"] is None:
        return fn(*args)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(rfd)
            drop_privileges()
            out = {"ok": True, "value": fn(*args)}
        except BaseException as exc:
            out = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}
        try:
            data = json.dumps(out).encode("utf-8")
            while data:
                data = data[os.write(wfd, data) :]
        except BaseException:
            code = 1
        os._exit(code)
    os.close(wfd)
    chunks = []
    try:
        while True:
            part = os.read(rfd, 1 << 20)
            if not part:
                break
            chunks.append(part)
    finally:
        os.close(rfd)
        os.waitpid(pid, 0)
    if not chunks:
        raise OSError("the helper process died")
    res = json.loads(b"".join(chunks).decode("utf-8"))
    if not res["ok"]:
        raise OSError(res["error"])
    return res["value"]


def _kill_tree(pgid, marker):
    marker = marker.encode()
    try:
        os.killpg(pgid, signal.SIGKILL)
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


class Killer(object):
    """A process of the sandbox user, forked before any command runs, that kills on request.

    Killing needs no fork then, so it works when a fork bomb has used up every pid; and it
    runs as the commands' uid, the only one that may read their environments (markers).
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.pid = None
        self.to = self.back = None

    def start(self):
        req_r, req_w = os.pipe()
        ack_r, ack_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(req_w)
                os.close(ack_r)
                drop_privileges()
                inbox = os.fdopen(req_r, "r")
                for line in iter(inbox.readline, ""):
                    parts = line.split()
                    if parts[0] == "all":
                        _kill_all()
                    else:
                        _kill_tree(int(parts[1]), parts[2])
                    os.write(ack_w, b"k")
            finally:
                os._exit(0)
        os.close(req_r)
        os.close(ack_w)
        self.pid, self.to, self.back = pid, req_w, ack_r

    def request(self, line):
        with self.lock:
            for _ in range(2):  # the sandbox user may have killed it: start another once
                if self.pid is None:
                    self.start()
                try:
                    os.write(self.to, line.encode() + b"\n")
                    if os.read(self.back, 1) == b"k":
                        return
                except OSError:
                    pass
                for fd in (self.to, self.back):
                    os.close(fd)
                try:
                    os.waitpid(self.pid, 0)
                except OSError:
                    pass
                self.pid = None


_killer = Killer()


def kill_tree(proc, marker):
    """SIGKILL the command's process group, then any process still carrying its marker."""
    try:
        if _state["run_as"] is None:
            _kill_tree(proc.pid, marker.decode())
        else:
            _killer.request("tree %d %s" % (proc.pid, marker.decode()))
    except (IOError, OSError, ValueError):
        pass


def missing(argv, env):
    """Whether a bare command name is on no PATH entry (execvp reports EACCES instead of
    ENOENT when an entry is one the sandbox user may not search, like root's home)."""
    name = argv[0] if argv else ""
    if not name or "/" in name:
        return False
    dirs = (env.get("PATH") or os.defpath).split(os.pathsep)
    return not any(os.path.exists(os.path.join(d or ".", name)) for d in dirs)


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
            **user_kwargs(),
        )
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        code = 127 if isinstance(exc, FileNotFoundError) or missing(req["argv"], env) else 126
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


def _read(path, limit):
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        return None
    return base64.b64encode(data).decode("ascii")


def _write(path, data, mode):
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        os.makedirs(parent)
    tmp = "%s.harness-tmp-%s" % (path, uuid.uuid4().hex[:8])
    with open(tmp, "wb") as fh:
        fh.write(base64.b64decode(data))
    if mode is not None:
        os.chmod(tmp, int(mode))
    elif os.path.exists(path):
        os.chmod(tmp, os.stat(path).st_mode & 0o7777)
    os.rename(tmp, path)


def _error(exc):
    return {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}


def do_read(conn, req, workdir):
    limit = int(req.get("limit") or (64 << 20))
    try:
        data = as_user(_read, os.path.join(workdir, req["path"]), limit)
    except (IOError, OSError) as exc:
        send_result(conn, _error(exc))
        return
    if data is None:
        send_result(conn, {"ok": False, "error": "file is larger than %d bytes" % limit})
        return
    send_result(conn, {"ok": True, "data": data})


def do_write(conn, req, workdir):
    try:
        as_user(_write, os.path.join(workdir, req["path"]), req["data"], req.get("mode"))
    except (IOError, OSError) as exc:
        send_result(conn, _error(exc))
        return
    send_result(conn, {"ok": True})


def _setup(workdir, src, scratch):
    if src:
        cp = subprocess.Popen(
            ["cp", "-a", src.rstrip("/") + "/.", workdir + "/"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        err = cp.communicate()[1]
        if cp.returncode != 0:
            raise OSError("cp: %s" % err.decode("utf-8", "replace")[-2000:].strip())
    if scratch and not os.path.isdir(scratch):
        os.makedirs(scratch)


def do_setup(conn, req, workdir):
    """Make the work tree the sandbox user's, fill it from `src`, create the scratch dir."""
    try:
        run_as = _state["run_as"]
        if req.get("own_workdir") and run_as is not None:
            os.chown(workdir, run_as[0], run_as[1])
        as_user(_setup, workdir, req.get("src"), req.get("scratch"))
    except (IOError, OSError) as exc:
        send_result(conn, _error(exc))
        return
    send_result(conn, {"ok": True})


def _collect(pipe, buf):
    for data in iter(lambda: pipe.read(CHUNK), b""):
        buf.write(data)


def _start_tar(args, stdin, stdout):
    """tar as the sandbox user in a session of its own, its stderr collected (capped)."""
    proc = subprocess.Popen(
        ["tar"] + args,
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        start_new_session=True,
        **user_kwargs(),
    )
    err = Capped(8192)
    reader = threading.Thread(target=_collect, args=(proc.stderr, err), daemon=True)
    reader.start()
    return proc, err, reader


def do_pack(conn, req, workdir):
    """Stream the work tree as a tar archive (b"o" frames), then a result."""
    proc, err, reader = _start_tar(
        ["-C", workdir, "-cf", "-", "."], subprocess.DEVNULL, subprocess.PIPE
    )
    try:
        for data in iter(lambda: os.read(proc.stdout.fileno(), CHUNK), b""):
            send_frame(conn, b"o", data)
    except (IOError, OSError):
        kill_tree(proc, b"-")
        proc.wait()
        return
    code = proc.wait()
    reader.join()
    send_result(conn, {"exit_code": code, "stderr": err.value()[0]})


def do_unpack(conn, req, workdir):
    """Extract a tar archive sent as length-prefixed chunks (an empty one ends it)."""
    proc, err, reader = _start_tar(
        ["-C", workdir, "-xpf", "-"], subprocess.PIPE, subprocess.DEVNULL
    )
    try:
        while True:
            size = struct.unpack(">I", recv_exact(conn, 4))[0]
            if size == 0:
                break
            proc.stdin.write(recv_exact(conn, size))
        proc.stdin.close()
    except (IOError, OSError, EOFError):
        kill_tree(proc, b"-")
    code = proc.wait()
    reader.join()
    send_result(conn, {"exit_code": code, "stderr": err.value()[0]})


def _kill_all():
    os.kill(-1, signal.SIGKILL)  # as the sandbox user, in the sandbox's pid namespace


def shutdown():
    if _state["run_as"] is not None:
        try:
            _killer.request("all")
        except (IOError, OSError, ValueError):
            pass
    with _children_lock:
        procs = list(_children)
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    os._exit(0)


OPS = {
    "exec": do_exec,
    "read": do_read,
    "write": do_write,
    "setup": do_setup,
    "pack": do_pack,
    "unpack": do_unpack,
}


def handle(conn, workdir):
    try:
        size = struct.unpack(">I", recv_exact(conn, 4))[0]
        if size > MAX_REQUEST:
            return
        req = json.loads(recv_exact(conn, size).decode("utf-8"))
        op = req.get("op")
        if op == "lease":
            if _state["lease"]:
                send_result(conn, {"ok": False, "error": "the lease is already held"})
                return
            _state["lease"] = True
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
        elif op in OPS:
            OPS[op](conn, req, workdir)
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


def user_env(uid):
    """HOME, USER and LOGNAME of the sandbox user for commands, unless set on purpose."""
    try:
        own = pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        own = None
    if os.environ.get("HOME") not in (None, "", own):
        return
    try:
        entry = pwd.getpwuid(uid)
        home, name = entry.pw_dir, entry.pw_name
    except KeyError:
        home, name = "/tmp", "sandbox"
    if not os.path.isdir(home):
        home = "/tmp"
    os.environ.update({"HOME": home, "USER": name, "LOGNAME": name})


def lock_down():
    """Make the agent non-dumpable (a same-uid process can then neither trace nor read it),
    set no_new_privs for it and its commands, and clear its inheritable capabilities."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: no setuid binary lifts a command
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, self
        data = (ctypes.c_uint32 * 6)()  # {effective, permitted, inheritable} x 2
        if libc.capget(header, data) == 0 and (data[2] or data[5]):
            data[2] = data[5] = 0
            libc.capset(header, data)
    except Exception:
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--run-as", default=None, help="UID:GID that commands run as")
    parser.add_argument("--socket-mode", default="600", help="octal mode of the socket")
    parser.add_argument("--rlimit", action="append", default=[], help="nproc|as|fsize=N")
    args = parser.parse_args()
    if args.run_as:
        uid, gid = args.run_as.split(":")
        _state["run_as"] = (int(uid), int(gid))
        user_env(int(uid))
    for item in args.rlimit:  # inherited by every command
        name, value = item.split("=")
        resource.setrlimit(RLIMITS[name], (int(value), int(value)))
    lock_down()
    if _state["run_as"] is not None:
        _killer.start()
    signal.signal(signal.SIGTERM, lambda *_: shutdown())
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        server.bind(args.socket + ".tmp")
    finally:
        os.umask(old)
    os.chmod(args.socket + ".tmp", int(args.socket_mode, 8))
    server.listen(64)
    os.rename(args.socket + ".tmp", args.socket)  # appears only once it accepts
    started = time.monotonic()
    server.settimeout(1.0)
    while True:
        try:
            conn, _ = server.accept()
        except socket.timeout:
            if not _state["lease"] and time.monotonic() - started > LEASE_GRACE_S:
                shutdown()
            continue
        conn.settimeout(None)
        try:
            threading.Thread(target=handle, args=(conn, args.workdir), daemon=True).start()
        except RuntimeError:  # no thread left (a fork bomb holds every pid): answer inline
            handle(conn, args.workdir)


if __name__ == "__main__":
    main()
