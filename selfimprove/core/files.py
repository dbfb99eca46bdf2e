"""The one way a file is written: a temporary file beside it (named by the writing process, so several processes may
write the same file at once), flushed and fsynced, then renamed over it, so a reader never sees half a file and a
finished write survives a power cut. Also the tests' fault points, which kill a process at a named step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

FAULT_ENV = "SELFIMPROVE_FAULT"
FAULT_ONCE_ENV = "SELFIMPROVE_FAULT_ONCE"


def fault_point(final: Path, point: str) -> None:
    """Fault injection for tests: with ``SELFIMPROVE_FAULT=<folder>:<point>`` (``round_01/train:before_done``,
    ``eval_sets:start``, ``metrics.jsonl:before_rename``), the process SIGKILLs itself when it reaches that point,
    so a kill lands exactly there, whatever the machine's speed. A ``@scancel`` suffix cancels the Slurm job this
    process runs in instead (the whole job, as a user's scancel does); with ``SELFIMPROVE_FAULT_ONCE=<file>`` the
    fault fires only while that file does not exist (it is created first), so a retried attempt goes through."""
    spec = os.environ.get(FAULT_ENV, "")
    spec, _, action = spec.partition("@")
    if not spec or spec not in (f"{final.parent.name}/{final.name}:{point}", f"{final.name}:{point}"):
        return
    once = os.environ.get(FAULT_ONCE_ENV)
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    if action == "scancel":
        subprocess.run(["scancel", os.environ["SLURM_JOB_ID"]], check=True)
        while True:  # Slurm's SIGTERM (then SIGKILL) ends this process like every other of the job
            signal.pause()
    os.kill(os.getpid(), signal.SIGKILL)


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's entry for a renamed file survives a power cut only once it is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> None:
    """Write ``path`` atomically: temp file, fsync, rename (``<name>:before_rename`` is a fault point)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    fault_point(path, "before_rename")
    os.replace(tmp, path)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def read_json(path: str | Path):
    with open(path) as fh:
        return json.load(fh)
