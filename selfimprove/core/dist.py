"""Several processes under one launcher: who this rank is, its share of a job, gathering the shares, agreeing on
failures so no rank waits for ever for one that raised, and running a stage's job again until it finishes.
Nothing here initialises torch.distributed."""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from selfimprove.core.files import read_json, write_json

logger = logging.getLogger(__name__)

LAUNCHED_ENV = "SELFIMPROVE_LAUNCHED"  # set by the orchestrator for the jobs it launches (selfimprove.loop.launch)


def in_launched_job() -> bool:
    """True inside a job the orchestrator (or a user, with ``selfimprove stage --launched``) launched for one stage:
    the stage runs in this process instead of launching itself again. An explicit marker, because a 1-process
    accelerate job looks exactly like a plain process."""
    return bool(os.environ.get(LAUNCHED_ENV))


def run_until_done(
    command: Callable[[int], list[str]], env: dict, done: Callable[[], bool], tries: int, label: Callable[[int], str]
) -> int | None:
    """Run a stage's job (``command(attempt)``: its argv) up to ``tries`` times, until ``done()``; None when it
    finished, else the last exit status. A job counts as finished by its DONE whatever its exit status: a rank may
    abort after the stage is written (gloo's teardown). Each try starts from the stage's clean state
    (selfimprove.core.atomic). The local launcher and Slurm steps both retry through here."""
    rc = None
    for attempt in range(1, tries + 1):
        cmd = command(attempt)
        logger.info("%s: %s", label(attempt), shlex.join(cmd))
        rc = subprocess.run(cmd, env=env).returncode
        if done():
            return None
        why = f"exit status {rc}" if rc else "exit status 0, but the stage has no DONE"
        logger.warning("%s failed (%s)%s", label(attempt), why, "; trying again" if attempt < tries else "")
    return rc


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed group, else (0, 1). Never initialises one."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def watch_crashes() -> None:
    """A launched rank that dies of a fatal signal (SIGABRT, SIGSEGV) prints every thread's Python stack to stderr
    first, so the job's log says where it died."""
    if not faulthandler.is_enabled():
        faulthandler.enable(all_threads=True)


def leave() -> None:
    """End this rank's part in the process group once its stage is done. A process that exits with the group still
    up can abort in torch's teardown (``terminate called without an active exception``, SIGABRT) after its stage
    finished, which its launcher reports as a failed job."""
    if dist_rank_world()[1] > 1:
        import torch.distributed as dist

        dist.destroy_process_group()


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


def gather_files(part: dict[int, list], folder: Path) -> dict[int, list]:
    """``gather_dict`` through a shared filesystem: each rank writes its share to ``folder/rank-R.json`` (atomically),
    and after a barrier rank 0 reads every share; the other ranks keep only their own. Nothing but a barrier goes
    through the process group, however large the shares."""
    rank, world = dist_rank_world()
    if world == 1:
        return part

    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / f"rank-{rank:05d}.json", {str(k): v for k, v in part.items()})
    barrier()
    if rank != 0:
        return part
    return {int(k): v for r in range(world) for k, v in read_json(folder / f"rank-{r:05d}.json").items()}


def barrier() -> None:
    if dist_rank_world()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


class StageFailedElsewhere(RuntimeError):
    """Another rank's stage raised; this rank stops too instead of waiting for it in a collective."""


@contextlib.contextmanager
def reported(final: Path, world: int):
    """Run a step of a stage, then agree with the other ranks on how it went: an error on any rank is raised on every
    rank (the others name it), so a failing rank never leaves the rest waiting in a barrier."""
    try:
        yield
    except BaseException as e:
        if world > 1 and not isinstance(e, (KeyboardInterrupt, StageFailedElsewhere)):
            agree(final, world, f"{type(e).__name__}: {e}")
        raise
    agree(final, world, None)


def agree(final: Path, world: int, error: str | None) -> None:
    if world == 1:
        return
    import torch.distributed as dist

    errors: list = [None] * world
    dist.all_gather_object(errors, error)
    failed = [(r, e) for r, e in enumerate(errors) if e is not None]
    if failed and error is None:
        r, e = failed[0]
        raise StageFailedElsewhere(f"stage {final.name}: rank {r} failed ({e}); this rank stops too")
