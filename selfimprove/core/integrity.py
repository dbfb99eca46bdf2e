"""What a finished stage is, on disk, and how to tell it is still that.

A stage's ``DONE`` marker is JSON, written last: the size and SHA-256 of every file in the stage (``files``), and
for every input it read (earlier stages, data files) the input's digest at the time (``inputs``). Files and folders
are fsynced before DONE and the rename, so a finished stage survives a power cut. Reading a stage checks the sizes
(cheap, always: ``check_sizes``); ``selfimprove verify`` checks every hash and every input digest (``verify_stage``).
A stage's digest covers its data files only (not meta.json's timings nor a dataset's random fingerprint), so a
stage redone with the same inputs has the same digest and later stages stay valid.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from selfimprove.core.errors import RunDirError
from selfimprove.core.files import fault_point, fsync_path, read_json, write_text

DONE = "DONE"
NOT_CONTENT = {"meta.json", "state.json"}  # timings, and `datasets`' random fingerprints: not what a stage produced


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not (p.parent == folder and p.name == DONE))


def manifest(folder: Path) -> dict[str, list]:
    return {str(p.relative_to(folder)): [p.stat().st_size, file_hash(p)] for p in _files(folder)}


def content_digest(files: dict[str, list]) -> str:
    h = hashlib.sha256()
    for rel, (_, sha) in sorted(files.items()):
        if Path(rel).name not in NOT_CONTENT:
            h.update(f"{rel}\0{sha}\n".encode())
    return h.hexdigest()


def write_done(folder: Path, inputs: dict[str, str] | None = None) -> dict:
    """fsync every file and folder of the stage, then write and fsync DONE with the manifest; return the record."""
    files = manifest(folder)
    for p in _files(folder):
        fsync_path(p)
    for d in sorted({p.parent for p in _files(folder)} | {folder}, key=lambda d: -len(d.parts)):
        fsync_path(d)
    record = {
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "files": files,
        "inputs": inputs or {},
        "digest": content_digest(files),
    }
    write_text(folder / DONE, json.dumps(record, indent=1, sort_keys=True))
    fsync_path(folder)
    return record


def read_done(folder: Path) -> dict | None:
    """The stage's DONE record; None when it has none or one from before manifests (a plain timestamp)."""
    try:
        record = json.loads((Path(folder) / DONE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return record if isinstance(record, dict) and "files" in record else None


def stage_digest(folder: Path) -> str:
    record = read_done(folder)
    return record["digest"] if record else ""


def replace_dir(partial: Path, final: Path) -> None:
    """Move a finished ``partial`` into place. An existing ``final`` (a stage being redone) is set aside first and
    removed only once the new one is in place, so a failed redo never loses the finished stage."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        fault_point(final, "between_renames")
    os.replace(partial, final)
    fsync_path(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def shards_of(final: Path) -> Path:
    """Where the ranks of a sharded stage leave their shares for rank 0 (removed once the stage is finished)."""
    return final.with_name(final.name + ".shards")


def recover(final: Path) -> None:
    """Undo a crash inside ``replace_dir``: with no ``final`` but a finished ``.old``, the old stage comes back; the
    leftovers of a finished stage (``.old``, an abandoned ``.partial``, ranks' ``.shards``) go."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        if not final.exists() and (old / DONE).exists():
            os.replace(old, final)
        else:
            shutil.rmtree(old, ignore_errors=True)
    if (final / DONE).exists():
        for leftover in (final.with_name(final.name + ".partial"), shards_of(final)):
            shutil.rmtree(leftover, ignore_errors=True)


def stage_root(path: Path) -> Path | None:
    """The finished stage folder holding ``path`` (the first folder up from it with a DONE), if any."""
    for folder in [path, *path.parents]:
        if (folder / DONE).is_file():
            return folder
    return None


def check_sizes(path: Path, run_dir: Path | None = None) -> None:
    """Compare the sizes of the files under ``path`` with its stage's DONE record: a truncated, grown or missing
    file is refused with the command that finds out more."""
    path = Path(path)
    root = stage_root(path)
    record = read_done(root) if root else None
    if record is None:
        return
    inner = "" if path == root else str(path.relative_to(root))
    where = str(root.relative_to(run_dir)) if run_dir and root.is_relative_to(run_dir) else str(root)
    for rel, (size, _) in record["files"].items():
        if inner and rel != inner and not rel.startswith(inner + "/"):
            continue
        f = root / rel
        if not f.exists():
            raise RunDirError(
                f"{where} is damaged: {rel} is missing. 'selfimprove verify RUN_DIR' checks the whole run "
                "and names the command that redoes the stage."
            )
        if f.stat().st_size != size:
            raise RunDirError(
                f"{where} is damaged: {rel} has {f.stat().st_size} bytes, its DONE recorded {size}. "
                "'selfimprove verify RUN_DIR' checks the whole run and names the command that redoes it."
            )


_CONTENT_CHECKED: set[tuple[str, int]] = set()


def check_content(folder: Path, run_dir: Path | None = None) -> None:
    """Hash every file a finished stage's DONE records (once per process and DONE): a file changed in place, even at
    the same size, is refused with the message ``check_sizes`` gives, before a stage reads it."""
    done = Path(folder) / DONE
    record = read_done(folder)
    if record is None:
        return
    key = (str(done.resolve()), done.stat().st_mtime_ns)
    if key in _CONTENT_CHECKED:
        return
    check_sizes(folder, run_dir)
    where = str(folder.relative_to(run_dir)) if run_dir and folder.is_relative_to(run_dir) else str(folder)
    for rel, (_, sha) in sorted(record["files"].items()):
        if Path(rel).name not in NOT_CONTENT and file_hash(folder / rel) != sha:
            raise RunDirError(
                f"{where} is damaged: {rel} changed after the stage finished (its content hash differs). "
                "'selfimprove verify RUN_DIR' checks the whole run and names the command that redoes the stage."
            )
    _CONTENT_CHECKED.add(key)


def read_stage_json(path: Path, run_dir: Path | None = None):
    """A JSON file of a finished stage, refused with the 'damaged' message when it is missing or changed in size."""
    check_sizes(path, run_dir)
    return read_json(path)


def verify_stage(folder: Path, current_inputs: dict[str, str]) -> list[str]:
    """Every difference between a stage and its DONE record: changed, missing or extra files, and inputs whose digest
    is no longer the one the stage was made from."""
    record = read_done(folder)
    if record is None:
        return ["has no integrity record (made before selfimprove kept one, or interrupted)"]
    found, want = manifest(folder), record["files"]
    out = [f"{rel} changed (content hash differs)" for rel in sorted(set(found) & set(want)) if found[rel] != want[rel]]
    out += [f"{rel} is missing" for rel in sorted(set(want) - set(found))]
    out += [f"{rel} was added after the stage finished" for rel in sorted(set(found) - set(want))]
    for name, digest in record["inputs"].items():
        now = current_inputs.get(name)
        if now is not None and now != digest:
            out.append(f"its input {name} is no longer the one it was made from")
    return out
