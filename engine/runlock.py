"""One process per run folder: an exclusive lock held while the pipeline runs in it.

Two processes in one folder — `post run --resume` typed twice, the TUI and a headless run, two suite
processes given the same row — would train the same stages twice and race on which prompt, record and
results.json land last. The lock is an OS advisory lock (`fcntl.flock`) on `<run>/.post.lock`: the
kernel drops it when its process ends however it ends (kill -9 included), so a crash never leaves a
stale lock to clear by hand. The file also says who holds it, for the refusal's message.
Where flock does not exist (Windows) runs are not locked. Under torchrun only rank 0 writes the
folder (the others use a scratch folder), so only rank 0 takes it.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

from engine.errors import PostError, os_problem

try:
    import fcntl
except ImportError:  # pragma: no cover — not POSIX
    fcntl = None

LOCK = ".post.lock"


_held: dict[str, list] = {}  # lock path → [open handle, depth, owning thread]: re-entrant in that thread only
_guard = threading.Lock()


class RunLock:
    """`with RunLock(run_dir):` — refuses (PostError) when another live process, or another thread of this
    one (two TUI runs on one folder), holds the folder. Re-entrant within one thread (an owner's transfer
    locks its folder, then runs the pipeline in it)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.key = str(self.path.resolve())

    def __enter__(self) -> "RunLock":
        if not self.path.parent.is_dir():
            raise PostError(f"run folder {self.path.parent} does not exist: give the folder a run wrote (it holds config.toml)")
        if fcntl is None:
            return self
        with _guard:
            held = _held.get(self.key)
            if held is not None:
                if held[2] != threading.get_ident():
                    raise PostError(f"run folder {self.path.parent} is in use by another run in this process: "
                                    "wait for it to finish or stop it, then resume")
                held[1] += 1
                return self
            _held[self.key] = [self._acquire(), 1, threading.get_ident()]
        return self

    def _acquire(self):
        try:
            handle = open(self.path, "a+", encoding="utf-8")
        except OSError as err:  # a read-only run folder, say: one line, nothing written
            problem = os_problem(err)
            if problem is None:
                raise
            raise PostError(problem) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(handle)
            handle.close()
            raise PostError(f"run folder {self.path.parent} is in use by another post process ({holder}): "
                            "wait for it to finish or stop it (Ctrl-C keeps its finished stages), then resume") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
        handle.flush()
        return handle

    def __exit__(self, *exc) -> None:
        with _guard:
            held = _held.get(self.key)
            if held is None:
                return
            held[1] -= 1
            if held[1] == 0:
                del _held[self.key]
                held[0].close()  # closing the descriptor releases the lock; the file may stay


def _holder(handle) -> str:
    try:
        handle.seek(0)
        found = json.loads(handle.read() or "{}")
        return f"pid {found['pid']} on {found['host']}, since {found['since']}"
    except (ValueError, KeyError, TypeError, OSError):
        return "holder unknown"
