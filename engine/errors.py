"""The one error type users see, and the one line for the machine's errors a user can fix.

Anything the user can fix (bad config, missing file, unreachable hub, budget too small)
is raised as `PostError` with a single line that says what is wrong and how to fix it.
The CLI and the TUI print that line and exit with code 2 — never a traceback.
"""
import errno
import os
from pathlib import Path


class PostError(Exception):
    """A user-facing, one-line error (exit code 2)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line

    def __str__(self) -> str:
        return self.args[0]


# OSErrors that say something about the machine or a path the user chose, not about post: a folder this
# user cannot write or read, a read-only file system, a full disk. Any other OSError is a bug to report.
_FIXABLE = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
            errno.EROFS: "the file system is read-only", errno.ENOSPC: "no space left on the device",
            errno.EDQUOT: "the disk quota is used up"}
TEMP_MARK = ".post-tmp-"  # engine.artifacts' temp files: the message names the folder, not the temp file


def os_problem(err: OSError) -> str | None:
    """One line for an OSError the user can fix (with what to do), or None when it is not one of them.

    A permission error names the path it concerns; one without a path (a lock, a socket, shared memory) is
    not a folder the user chose, so it is left to the engine-bug path, traceback kept."""
    what = _FIXABLE.get(err.errno)
    if what is None:
        return None
    name = err.filename if isinstance(err.filename, (str, os.PathLike)) else None  # an fd's error has an int
    if name is None and err.errno in (errno.EACCES, errno.EPERM):
        return None
    where = Path(name) if name else None
    if where is not None and TEMP_MARK in where.name:
        where = where.parent  # writing a file there atomically: the folder is what must be writable
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space there or give another path"
    elif err.errno == errno.EROFS:
        fix = "give a path on a writable file system"
    else:
        fix = "make it readable and writable for this user (chmod u+rwX) or give another path"
    return f"cannot use {where or 'a path post writes'}: {what} — {fix}"
