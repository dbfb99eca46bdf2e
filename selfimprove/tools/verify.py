"""``selfimprove verify RUN``: every finished stage against its DONE record (every file's hash, every input's digest),
naming each damaged or stale stage and the command that redoes it. It writes nothing and needs no lock."""

from __future__ import annotations

from pathlib import Path

from selfimprove import registry
from selfimprove.core.atomic import is_done
from selfimprove.core.integrity import verify_stage
from selfimprove.core.rundir import SETUP_DIRS, round_numbers
from selfimprove.core.runs import open_run


def _redo(run: Path, k: int | None, name: str) -> str:
    if k is None:
        return f"rm -r {run / name} && selfimprove run {run / 'recipe.yaml'}  (it is remade from the recipe)"
    return f"selfimprove stage {name} {run} --round {k} --force"


def verify_run(run_dir: str | Path) -> tuple[int, list[str]]:
    """(stages checked, one line per problem with its fix)."""
    ctx = open_run(run_dir, trust=True)  # verifying runs nothing the recipe names
    run = ctx.run_dir
    folders = [(None, n) for n in SETUP_DIRS] + [(k, n) for k in round_numbers(run) for n in registry.STAGES]
    checked, problems = 0, []
    for k, name in folders:
        folder = ctx.folder(k, name)
        if not is_done(folder):
            continue
        checked += 1
        for problem in verify_stage(folder, ctx.inputs(k, name)):
            problems.append(f"{folder.relative_to(run)}: {problem}. Redo it: {_redo(run, k, name)}")
    return checked, problems
