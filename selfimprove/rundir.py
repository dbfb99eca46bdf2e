"""The on-disk layout of a run, and the one way every stage writes its outputs.

    RUN_DIR/
      recipe.yaml                  the recipe in force (a rerun with a different one is refused)
      recipes/                     every recipe the run has had, from which round each applied (history.json)
      base_model/                  round-0 starting policy (bootstrap builds it here)
      eval_sets/ probe_set/ seed_data/   fixed eval problems, probe prompts and labelled seed data, made once
      round_00/train/ ...          round 0: bootstrap on seed data
      round_01/{generate,judge,filter,select,train,evaluate,monitor}/
      metrics.jsonl                one line per completed round, rebuilt from round_*/monitor/metrics.json
      logs/                        tracebacks of unexpected errors

A stage writes into ``<stage>.partial/``, then ``meta.json``, then its ``DONE`` record (selfimprove.integrity: the
size and hash of every file and the digests of its inputs), fsyncs everything and renames the folder into place. A
folder without ``DONE`` (or any ``*.partial``) is an interrupted stage and is redone from scratch; a finished stage
being redone (``stage --force``) stays in place until its replacement is finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from selfimprove.integrity import (
    DONE,
    check_sizes,
    fault_point,
    file_hash,
    recover,
    replace_dir,
    stage_digest,
    write_done,
)

ROUND_DIR = re.compile(r"^round_(\d+)$")
SETUP_DIRS = ("base_model", "eval_sets", "probe_set", "seed_data")


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
            with _reported(final, world):
                yield scratch, dict(meta or {})
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        _agree(final, world, None)  # rank 0 writing the stage
        return
    partial = clean_partial(final)
    meta = dict(meta or {})
    start = time.perf_counter()
    with _reported(final, world):
        yield partial, meta
    with _reported(final, world):
        meta["wall_s"] = round(time.perf_counter() - start, 3)
        if world > 1:
            meta["world_size"] = world
        finish_stage(partial, final, meta, inputs)


class StageFailedElsewhere(RuntimeError):
    """Another rank's stage raised; this rank stops too instead of waiting for it in a collective."""


@contextlib.contextmanager
def _reported(final: Path, world: int):
    """Run a step of a stage, then agree with the other ranks on how it went: an error on any rank is raised on every
    rank (the others name it), so a failing rank never leaves the rest waiting in a barrier."""
    try:
        yield
    except BaseException as e:
        if world > 1 and not isinstance(e, (KeyboardInterrupt, StageFailedElsewhere)):
            _agree(final, world, f"{type(e).__name__}: {e}")
        raise
    _agree(final, world, None)


def _agree(final: Path, world: int, error: str | None) -> None:
    if world == 1:
        return
    import torch.distributed as dist

    errors: list = [None] * world
    dist.all_gather_object(errors, error)
    failed = [(r, e) for r, e in enumerate(errors) if e is not None]
    if failed and error is None:
        r, e = failed[0]
        raise StageFailedElsewhere(f"stage {final.name}: rank {r} failed ({e}); this rank stops too")


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
    """The rows of a saved dataset folder, after checking its files' sizes against its stage's DONE record."""
    from datasets import load_from_disk

    check_sizes(Path(path))
    if (Path(path) / "EMPTY").exists():
        return []
    return load_from_disk(str(path)).to_list()


def round_numbers(run_dir: str | Path) -> list[int]:
    """Every round folder's number, in order (round_00 ... round_99, round_100, ...)."""
    found = [ROUND_DIR.match(p.name) for p in Path(run_dir).iterdir()] if Path(run_dir).is_dir() else []
    return sorted(int(m.group(1)) for m in found if m)


def completed_rounds(run_dir: str | Path) -> list[int]:
    return [k for k in round_numbers(run_dir) if is_done(stage_dir(run_dir, k, "monitor"))]


def rebuild_metrics(run_dir: str | Path) -> list[dict]:
    """Rewrite metrics.jsonl from every completed round's monitor output: a rerun can never duplicate a line."""
    run_dir = Path(run_dir)
    lines = []
    for k in completed_rounds(run_dir):
        mon = stage_dir(run_dir, k, "monitor")
        if is_done(mon):
            lines.append(read_json(mon / "metrics.json"))
    tmp = run_dir / "metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(m, sort_keys=True) + "\n" for m in lines))
    fault_point(run_dir / "metrics.jsonl", "before_rename")
    os.replace(tmp, run_dir / "metrics.jsonl")
    return lines


class RunContext:
    """What every stage needs: the recipe, the run directory and the task (built once per process)."""

    def __init__(self, recipe, run_dir: str | Path):
        from selfimprove.config import recipe_hash
        from selfimprove.tasks import build_task

        self.recipe, self.run_dir, self.task = recipe, Path(run_dir), build_task(recipe)
        self.recipe_hash = recipe_hash(recipe)

    def stage(self, k: int, name: str) -> Path:
        return stage_dir(self.run_dir, k, name)

    def folder(self, k: int | None, name: str) -> Path:
        """Round k's stage folder, or with k None a setup folder (base_model, eval_sets, ...)."""
        return self.run_dir / name if k is None else self.stage(k, name)

    def writing(self, k: int | None, name: str, meta: dict | None = None):
        """``atomic_stage`` for a stage of this run: its meta records the recipe's hash, its DONE the inputs'
        digests."""
        return atomic_stage(self.folder(k, name), {**(meta or {}), "recipe": self.recipe_hash}, self.inputs(k, name))

    def _checkpoint_stage(self, j: int) -> Path | None:
        if j >= 0:
            return self.stage(j, "train")
        return self.run_dir / "base_model" if self.recipe.model.path is None else None

    def input_paths(self, k: int | None, name: str) -> list[Path]:
        """The folders a stage reads: the one table of which stage depends on which."""
        run, r = self.run_dir, self.recipe
        if k is None:
            return [run / "eval_sets"] if name in ("probe_set", "seed_data") else []
        before = lambda stage, lo=0: [self.stage(j, stage) for j in range(lo, k)]  # noqa: E731
        init = -1 if (k == 0 or r.train.init == "base") else k - 1
        table = {
            "generate": [self._checkpoint_stage(k - 1), run / "eval_sets", *before("monitor")],
            "judge": [self.stage(k, "generate"), self._checkpoint_stage(k - 1)],
            "filter": [self.stage(k, "judge"), run / "eval_sets", run / "probe_set"],
            "select": [self.stage(k, "filter"), *before("select", 1), *before("monitor")],
            "train": [self._checkpoint_stage(init), run / "seed_data", *before("select", 1), *before("filter", 1)]
            + ([self.stage(k, "select"), self.stage(k, "filter")] if k else []),
            "evaluate": [self.stage(k, "train"), run / "eval_sets", run / "probe_set"],
            "monitor": [self.stage(k, "evaluate"), self.stage(k, "train"), *before("monitor")]
            + ([self.stage(k, "filter"), self.stage(k, "select"), self._checkpoint_stage(k - 1)] if k else []),
        }
        return [p for p in table[name] if p is not None and is_done(p)]

    def inputs(self, k: int | None, name: str) -> dict[str, str]:
        """{input: digest} for a stage: each folder it reads (by its DONE digest) and each local file the task reads."""
        out = {str(p.relative_to(self.run_dir)): stage_digest(p) for p in self.input_paths(k, name)}
        out.update({f"file:{f}": file_hash(Path(f)) for f in self.task.source_files()})
        return out

    @property
    def prompt_format(self):
        """How every prompt of this run becomes the policy's input (selfimprove.prompts)."""
        from selfimprove.prompts import PromptFormat

        return PromptFormat(
            chat=self.recipe.generate.chat_template, system=self.task.system_prompt, fewshot=self.task.fewshot_examples
        )

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
        return [
            read_json(self.stage(j, "monitor") / "metrics.json")
            for j in range(upto)
            if is_done(self.stage(j, "monitor"))
        ]

    def eval_rows(self) -> list[dict]:
        return load_rows(self.run_dir / "eval_sets" / "data")

    def dev_rows(self) -> list[dict]:
        """The dev split (eval_sets/dev), the only labelled held-out rows a decision of the loop may read."""
        path = self.run_dir / "eval_sets" / "dev"
        return load_rows(path) if path.exists() else []

    def excluded_prompts(self) -> set[str]:
        """Eval and dev prompts (as selfimprove.tasks.prompt_key compares them), which no training prompt may be."""
        from selfimprove.tasks import prompt_key

        return {prompt_key(r["prompt"]) for r in self.eval_rows() + self.dev_rows()}

    def probe_rows(self) -> list[dict]:
        path = self.run_dir / "probe_set" / "data"
        return load_rows(path) if path.exists() else []
