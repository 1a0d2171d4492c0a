"""A fork server for the command-line tests: `python tests/forkserver.py SCRIPT ARGS...` behaves like
`python SCRIPT ARGS...` (argv, cwd, environment, stdin/stdout/stderr, exit code, signals), but the
script runs in a fork of a server process that has already imported torch, Lightning and hybridlearn.

Every `train.py` a test starts would otherwise spend 4-5 s of CPU importing Lightning (which imports
torchmetrics and torchvision's models) before doing a second of work; the suite starts about a hundred.
Tests about the process itself (signals, start-up, a real interpreter) start `sys.executable` directly.

The server (`--serve SOCKET`, started once per pytest worker by tests/conftest.py) imports, then
accepts one connection per command. For each, a monitor process forks the command's process, tells
the client its pid and, when it ends, its exit status; the client forwards SIGINT/SIGTERM to it, and
if the client dies (a test's timeout kills it) the monitor kills the command's process group. Without
$HYBRIDLEARN_FORKSERVER, or when the server is gone, the client runs a real interpreter instead.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import json
import os
import runpy
import select
import signal
import socket
import sys
import threading
import time

ENV = "HYBRIDLEARN_FORKSERVER"
PRELOAD = (
    "torch",
    "torchvision",
    "lightning",
    "av",
    "wandb",
    "hybridlearn.core.runner",
    "hybridlearn.mnist.lenet",
    "hybridlearn.gom.study",
    "hybridlearn.digits.study",
    "hybridlearn.gan.model",
    "hybridlearn.style.model",
    "hybridlearn.reproduce.stages",
)


# ------------------------------------------------------------------------------------ the client
def _send(conn: socket.socket, msg: dict) -> None:
    conn.sendall(json.dumps(msg).encode() + b"\n")


def _recv(conn: socket.socket, buf: bytearray) -> dict | None:
    while b"\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return json.loads(line)


def client(argv: list[str]) -> int:
    """Run `python *argv` through the server; fall back to a real interpreter."""
    path = os.environ.get(ENV)
    deadline = time.monotonic() + 120
    while path and not os.path.exists(path) and os.path.exists(path + ".tmp") and time.monotonic() < deadline:
        time.sleep(0.05)  # the server is still importing
    try:
        if not path:
            raise OSError
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
    except OSError:
        os.execv(sys.executable, [sys.executable, *argv])
    request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
    socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
    buf = bytearray()
    pid = _recv(conn, buf)["pid"]

    def forward(sig: int, _frame) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    reply = _recv(conn, buf)
    code = 1 if reply is None else reply["rc"]
    if code < 0:  # died of a signal: so does the client, so the caller sees the same
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


# ------------------------------------------------------------------------------------ the server
def _run_command(request: dict, fds: list[int]) -> None:
    """In the forked child: become `python *argv` and never return (exits like an interpreter)."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.setpgid(0, 0)  # its own group: the monitor can stop it with everything it started
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    argv = request["argv"]
    try:
        if argv[0] == "-m":
            sys.argv = argv[1:]
            sys.path[0] = request["cwd"]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
            runpy.run_path(argv[0], run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code
    # An uncaught exception (a traceback, Ctrl-C) has left above, through the interpreter's own exit.
    _exit_fast(code)


def _exit_fast(code) -> None:
    """Exit as the interpreter does (threads joined, atexit handlers run, stdio flushed, the same
    exit status) but without tearing down every module: in a fork that would touch, and so copy,
    every page of the server's heap (about 2 s)."""
    threading._shutdown()  # join the non-daemon threads, as Python's own exit does first
    atexit._run_exitfuncs()
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code & 0xFF)


def _monitor(conn: socket.socket) -> None:
    """In a fork of the server: start one command, report its pid and exit status."""
    msg, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
    while not msg.endswith(b"\n"):
        msg += conn.recv(1 << 20)
    request = json.loads(msg)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _run_command(request, fds)
    for fd in fds:
        os.close(fd)
    _send(conn, {"pid": pid})
    pidfd = os.pidfd_open(pid)  # readable when the command ends: no polling, no latency
    ready, _, _ = select.select([pidfd, conn], [], [])
    if pidfd not in ready and conn.recv(1) == b"":  # the client is gone (a test's timeout): so is its command
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    status = os.waitpid(pid, 0)[1]
    try:
        _send(conn, {"rc": os.waitstatus_to_exitcode(status)})
    except OSError:
        pass  # the client is gone


def serve(path: str) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")  # clients connect once the imports are done: never to a half-ready server
    listener.listen(64)
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError as e:  # a renamed module: the commands import it themselves, a little slower
            print(f"forkserver: not preloaded: {name} ({e})", file=sys.stderr)
    gc.freeze()  # the imported objects: the forks' garbage collections leave them (and their pages) alone
    os.rename(path + ".tmp", path)
    sys.stdout.flush()
    sys.stderr.flush()
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            # the monitor; its fork, the command, leaves through _run_command's SystemExit (or an
            # exception) like any interpreter, so no try/finally here may catch it
            listener.close()
            _monitor(conn)
            os._exit(0)
        conn.close()
        while True:  # reap finished monitors
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2])
    else:
        sys.exit(client(sys.argv[1:]))
