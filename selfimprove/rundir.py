"""The on-disk layout of a run, and the one way every stage writes its outputs.

    RUN_DIR/
      recipe.yaml                  resolved recipe (a rerun with a different one is refused)
      base_model/                  round-0 starting policy (bootstrap builds it here)
      eval_sets/                   fixed eval sets, made once
      round_00/train/ ...          round 0: bootstrap on seed data
      round_01/{generate,judge,filter,select,train,evaluate,monitor}/
      metrics.jsonl                one line per completed round, rebuilt from round_*/monitor/metrics.json

A stage writes into ``<stage>.partial/``, then writes ``meta.json`` and the ``DONE`` marker, then renames the folder
into place. A folder without ``DONE`` (or any ``*.partial``) is an interrupted stage and is redone from scratch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

DONE = "DONE"


def round_dir(run_dir: str | Path, k: int) -> Path:
    return Path(run_dir) / f"round_{k:02d}"


def stage_dir(run_dir: str | Path, k: int, stage: str) -> Path:
    return round_dir(run_dir, k) / stage


def is_done(path: str | Path) -> bool:
    return (Path(path) / DONE).exists()


def write_json(path: str | Path, obj) -> None:
    """Write JSON atomically (temp file + rename) so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path: str | Path):
    with open(path) as fh:
        return json.load(fh)


@contextlib.contextmanager
def atomic_stage(final: str | Path, meta: dict | None = None):
    """Yield a scratch folder; on success record meta (with wall time), mark DONE and move it to ``final``.

    Anything left from an earlier, interrupted attempt is removed first, so a redone stage starts clean. Under
    ``accelerate launch`` every rank runs the stage (their work is sharded and gathered), but only the main process
    writes the stage: the others get a private throwaway folder, and all wait for the main one to finish.
    """
    final = Path(final)
    rank, world = dist_rank_world()
    if rank != 0:
        scratch = Path(tempfile.mkdtemp(prefix=f"{final.name}.rank{rank}."))
        try:
            yield scratch, dict(meta or {})
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        barrier()
        return
    partial = final.with_name(final.name + ".partial")
    for stale in (partial, final):
        if stale.exists():
            shutil.rmtree(stale)
    partial.mkdir(parents=True)
    meta = dict(meta or {})
    start = time.perf_counter()
    yield partial, meta
    meta["wall_s"] = round(time.perf_counter() - start, 3)
    if world > 1:
        meta["world_size"] = world
    write_json(partial / "meta.json", meta)
    (partial / DONE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")
    os.replace(partial, final)
    barrier()


LAUNCHED_ENV = "SELFIMPROVE_LAUNCHED"  # set by the orchestrator for the jobs it launches (selfimprove.loop.launch)


def in_launched_job() -> bool:
    """True inside a job the orchestrator (or a user, with ``selfimprove stage --launched``) launched for one stage:
    the stage runs in this process instead of launching itself again. An explicit marker, because a 1-process
    accelerate job looks exactly like a plain process."""
    return bool(os.environ.get(LAUNCHED_ENV))


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed group, else (0, 1). Never initialises one."""
    import sys

    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def my_batches(n_items: int, batch_size: int) -> list[tuple[int, int]]:
    """(batch index, start) of the batches this rank works on: every world-th one, so the batches themselves, and any
    seed derived from their index, are the same for any number of processes."""
    rank, world = dist_rank_world()
    return [(b, start) for b, start in enumerate(range(0, n_items, batch_size)) if b % world == rank]


def gather_dict(part: dict) -> dict:
    """Under accelerate, the union of every rank's dict (their keys are disjoint shares of one job); else ``part``."""
    if dist_rank_world()[1] == 1:
        return part
    import torch.distributed as dist

    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, part)
    return {k: v for p in parts for k, v in p.items()}


def barrier() -> None:
    if dist_rank_world()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


def save_rows(rows: list[dict], path: str | Path) -> None:
    """Save rows as a `datasets` dataset folder."""
    from datasets import Dataset

    if not rows:  # `datasets` writes no Arrow file for zero rows and cannot reload it, so mark emptiness
        Path(path).mkdir(parents=True)
        (Path(path) / "EMPTY").write_text("0 rows\n")
        return
    Dataset.from_list(rows).save_to_disk(str(path))


def load_rows(path: str | Path) -> list[dict]:
    from datasets import load_from_disk

    if (Path(path) / "EMPTY").exists():
        return []
    return load_from_disk(str(path)).to_list()


def rebuild_metrics(run_dir: str | Path) -> list[dict]:
    """Rewrite metrics.jsonl from every completed round's monitor output: a rerun can never duplicate a line."""
    run_dir = Path(run_dir)
    lines = []
    for rd in sorted(run_dir.glob("round_[0-9][0-9]")):
        mon = rd / "monitor"
        if is_done(mon):
            lines.append(read_json(mon / "metrics.json"))
    tmp = run_dir / "metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(m, sort_keys=True) + "\n" for m in lines))
    os.replace(tmp, run_dir / "metrics.jsonl")
    return lines


class RunContext:
    """What every stage needs: the recipe, the run directory and the task (built once per process)."""

    def __init__(self, recipe, run_dir: str | Path):
        from selfimprove.tasks import build_task

        self.recipe, self.run_dir, self.task = recipe, Path(run_dir), build_task(recipe)

    def stage(self, k: int, name: str) -> Path:
        return stage_dir(self.run_dir, k, name)

    @property
    def prompt_format(self):
        """How every prompt of this run becomes the policy's input (selfimprove.prompts)."""
        from selfimprove.prompts import PromptFormat

        return PromptFormat(chat=self.recipe.generate.chat_template, system=self.task.system_prompt,
                            fewshot=self.task.fewshot_examples)

    def checkpoint(self, k: int) -> str:
        """The policy that round k trains into; round k generates from checkpoint(k - 1)."""
        from selfimprove.model import base_model_path

        if k < 0:
            return base_model_path(self.recipe, self.run_dir)
        return str(self.stage(k, "train") / "model")

    def relative(self, path: str) -> str:
        """A path inside the run as 'round_00/train/model' (lineage survives moving the run); others unchanged."""
        p = Path(path)
        return str(p.relative_to(self.run_dir)) if p.is_relative_to(self.run_dir) else str(path)

    def history(self, upto: int) -> list[dict]:
        """Metrics of completed rounds before ``upto``."""
        return [read_json(self.stage(j, "monitor") / "metrics.json") for j in range(upto) if is_done(self.stage(j, "monitor"))]

    def eval_rows(self) -> list[dict]:
        return load_rows(self.run_dir / "eval_sets" / "data")

    def probe_rows(self) -> list[dict]:
        path = self.run_dir / "probe_set" / "data"
        return load_rows(path) if path.exists() else []
