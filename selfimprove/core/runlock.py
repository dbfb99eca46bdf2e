"""One writer per run directory: ``run``, ``stage`` and ``monitor`` hold an OS file lock on ``RUN/.lock`` for as long
as they run. The kernel releases it when the process dies, so a killed run never leaves a stale lock; a second
writer is refused at once with the holder's PID and command. Readers (``report``, ``compare``, ``verify``) take no
lock. Jobs the orchestrator launches for one stage run under its lock and take none themselves.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from selfimprove.core.errors import RunDirError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def run_lock(run_dir: str | Path, command: str):
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise RunDirError(
                f"{run_dir} is not writable ({err.strerror}): selfimprove needs write access to a run "
                "directory to lock it, even to find that every stage is done. Copy the run somewhere "
                "writable, or read it with 'selfimprove report' / 'selfimprove verify'."
            ) from None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunDirError(
            f"{run_dir} is in use by {holder}: one writer at a time. Wait for it to finish, or stop "
            "it; a killed process releases the lock by itself."
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} (selfimprove {command})\n".encode(), 0)
        yield
    finally:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
