"""How every stage writes: into ``<stage>.partial/``, then ``meta.json``, then its ``DONE`` record
(selfimprove.core.integrity: the size and hash of every file and the digests of its inputs), fsynced, then renamed into
place. A folder without ``DONE`` (or any ``*.partial``) is an interrupted stage and is redone from scratch; a finished
stage being redone (``stage --force``) stays in place until its replacement is finished. Under a launcher only rank 0
writes, and every rank learns whether the stage succeeded everywhere (selfimprove.core.dist)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path

from selfimprove.core.dist import agree, dist_rank_world, reported
from selfimprove.core.files import fault_point, write_json
from selfimprove.core.integrity import DONE, recover, replace_dir, write_done


def is_done(path: str | Path) -> bool:
    return (Path(path) / DONE).exists()


@contextlib.contextmanager
def atomic_stage(final: str | Path, meta: dict | None = None, inputs: dict | None = None):
    """Yield a scratch folder; on success record meta (with wall time) and DONE (with ``inputs``' digests) and move it
    to ``final``.

    Anything left from an interrupted attempt is removed first, so a redone stage starts clean; a finished ``final``
    is replaced only once the new one is finished. Under ``accelerate launch`` every rank runs the stage (their work
    is sharded and gathered), but only the main process writes the stage: the others get a private throwaway
    folder, and all wait for the main one to finish.
    """
    final = Path(final)
    rank, world = dist_rank_world()
    if rank != 0:
        scratch = Path(tempfile.mkdtemp(prefix=f"{final.name}.rank{rank}."))
        try:
            with reported(final, world):
                yield scratch, dict(meta or {})
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        agree(final, world, None)  # rank 0 writing the stage
        return
    partial = clean_partial(final)
    meta = dict(meta or {})
    start = time.perf_counter()
    with reported(final, world):
        yield partial, meta
    with reported(final, world):
        meta["wall_s"] = round(time.perf_counter() - start, 3)
        if world > 1:
            meta["world_size"] = world
        finish_stage(partial, final, meta, inputs)


def clean_partial(final: Path) -> Path:
    """An empty ``<final>.partial`` to build the stage in; an interrupted earlier attempt at ``final`` is removed."""
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    recover(final)
    if final.exists() and not is_done(final):
        shutil.rmtree(final)
    partial.mkdir(parents=True)
    fault_point(final, "start")
    return partial


def finish_stage(partial: Path, final: Path, meta: dict, inputs: dict | None) -> None:
    write_json(partial / "meta.json", meta)
    fault_point(final, "before_done")
    write_done(partial, inputs)
    fault_point(final, "before_rename")
    replace_dir(partial, final)
    fault_point(final, "after_rename")
