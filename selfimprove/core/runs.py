"""Opening a run directory, the only way the engine writes into one.

- ``claimed_run``: for ``selfimprove run``. A new or empty directory becomes a run; a run is resumed if the recipe is
  the same (``rounds`` may grow, the run and its servers may move), or, with ``allow_recipe_change``, continues
  under the new recipe with the change recorded in its history. Everything else is refused before anything is
  written: a non-empty directory that is not a run, one that holds stages but lost its recipe.yaml, ``rounds``
  below what already finished. The directory is locked (selfimprove.core.runlock) for as long as the run goes on.
- ``open_run``: for the commands that work on an existing run (``stage``, ``monitor``, ``compare``). A run directory
  may come from someone else, so its recipe's interpreter paths and metric modules are not run without ``trust``.
- Recipe history: ``recipes/history.json`` lists every recipe the run has had, the round from which each applied and
  its hash, with the recipe itself beside it (``recipes/NNN.yaml``); each stage's meta.json and each line of
  metrics.jsonl carry the hash of the recipe its round ran under.
- Environment: ``environment.json`` lists what the run ran on (selfimprove.core.environment), one entry per change.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import yaml

from selfimprove.core import environment
from selfimprove.core.config import LOCATION_FIELDS, Recipe, recipe_from_dict, recipe_hash, recipe_to_dict
from selfimprove.core.dist import in_launched_job
from selfimprove.core.errors import RunDirError, UserError
from selfimprove.core.files import write_json, write_text
from selfimprove.core.rundir import ROUND_DIR, SETUP_DIRS, RunContext, completed_rounds
from selfimprove.core.runlock import LOCK_FILE, run_lock

RECIPE = "recipe.yaml"
HISTORY = Path("recipes") / "history.json"
IGNORABLE = {LOCK_FILE, "logs", "slurm"}  # what a claimed-but-not-started (or submitted) run may already hold


class RecipeMismatch(UserError):
    pass


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


def refuse_foreign(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"output_dir={str(run_dir)!r} is a file, not a folder. Choose another output_dir.")
    if not run_dir.is_dir() or (run_dir / RECIPE).exists():
        return
    names = sorted(p.name for p in run_dir.iterdir() if p.name not in IGNORABLE)
    if not names:
        return
    run_like = [
        n
        for n in names
        if ROUND_DIR.match(n.removesuffix(".partial"))
        or n.removesuffix(".partial") in SETUP_DIRS
        or n in ("metrics.jsonl", "recipes")
    ]
    if run_like:
        raise RunDirError(
            f"{run_dir} holds a run's stages ({', '.join(run_like[:4])}) but no {RECIPE}, so which recipe made "
            f"them is unknown: it is not re-adopted. Restore {RECIPE} (recipes/ keeps every version), or "
            "choose a new output_dir."
        )
    raise RunDirError(
        f"{run_dir} is not empty and is not a selfimprove run (no {RECIPE}; it holds {', '.join(names[:4])}"
        f"{', ...' if len(names) > 4 else ''}). selfimprove never writes into a folder it did not make: "
        "choose a new or empty output_dir."
    )


def _comparable(data: dict) -> dict:
    out = json.loads(json.dumps(data))
    for dotted in LOCATION_FIELDS:
        *parents, leaf = dotted.split(".")
        node = out
        for key in parents:
            node = node.get(key, {})
        node.pop(leaf, None)
    return out


def _write_recipe(path: Path, data: dict, note: str = "") -> None:
    header = "".join(f"# {line}\n" for line in note.splitlines())
    text = header + yaml.safe_dump(data, sort_keys=False)
    if path.exists() and path.read_text() == text:
        return  # a no-op resume writes nothing
    write_text(path, text)


def history(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / HISTORY
    return json.loads(path.read_text()) if path.exists() else []


def _record(run_dir: Path, recipe: Recipe, from_round: int, changes: list[str], note: str = "") -> None:
    entries = history(run_dir)
    n = len(entries)
    (run_dir / HISTORY.parent).mkdir(exist_ok=True)
    _write_recipe(run_dir / HISTORY.parent / f"{n:03d}.yaml", recipe_to_dict(recipe), note)
    entries.append(
        {
            "index": n,
            "from_round": from_round,
            "hash": recipe_hash(recipe),
            "file": f"recipes/{n:03d}.yaml",
            "changes": changes,
        }
    )
    write_json(run_dir / HISTORY, entries)


def saved_recipe(run_dir: Path) -> dict:
    """The recipe a run was started with (RUN_DIR/recipe.yaml), refused with a message when it is not a recipe."""
    path = Path(run_dir) / RECIPE
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        data, why = None, f"it is not YAML ({str(err).splitlines()[0]})"
    else:
        why = "it is empty" if data is None else f"it holds a {type(data).__name__}, not a recipe"
    if not isinstance(data, dict):
        kept = sorted((Path(run_dir) / HISTORY.parent).glob("*.yaml"))
        fix = f"copy the last of {HISTORY.parent}/ ({kept[-1].name}) over it" if kept else "restore it"
        raise RunDirError(f"{path} is damaged: {why}. It is the recipe the run was started with: {fix}.")
    return data


def _resume_or_start(recipe: Recipe, allow_recipe_change: bool, note: str) -> RunContext:
    run_dir = Path(recipe.output_dir)
    saved = run_dir / RECIPE
    new = recipe_to_dict(recipe)
    if not saved.exists():
        _write_recipe(saved, new, note)
        _record(run_dir, recipe, 0, [], note)
        return RunContext(recipe, run_dir)
    old = saved_recipe(run_dir)
    done = completed_rounds(run_dir)
    if done and recipe.rounds < done[-1]:
        raise RunDirError(
            f"rounds={recipe.rounds} but {run_dir} has already finished round {done[-1]}: a run cannot be "
            f"made shorter than it is. Keep rounds >= {done[-1]}, or choose a new output_dir."
        )
    changes = _diff(_comparable(old), _comparable(new))
    if changes and not allow_recipe_change:
        raise RecipeMismatch(
            f"{run_dir} was started with a different recipe:\n  "
            + "\n  ".join(changes)
            + "\nResume with the original recipe, choose a new output_dir, or pass --allow-recipe-change to continue "
            "under the new one (the run keeps both, and the round each applied from, in recipes/)."
        )
    if not history(run_dir):  # a run from before recipe histories: its saved recipe is the first entry
        _record(run_dir, recipe_from_dict(old), 0, [])
    if changes:
        _record(run_dir, recipe, done[-1] + 1 if done else 0, changes, note)
    _write_recipe(saved, new, note)
    return RunContext(recipe, run_dir)


@contextlib.contextmanager
def claimed_run(recipe: Recipe, allow_recipe_change: bool = False, note: str = ""):
    """The run directory of ``recipe``, created or resumed and locked for the duration (see the module doc)."""
    run_dir = Path(recipe.output_dir)
    refuse_foreign(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir, "run"):
        refuse_foreign(run_dir)  # again, now that no one else can be writing
        ctx = _resume_or_start(recipe, allow_recipe_change, note)
        done = completed_rounds(run_dir)
        environment.record(run_dir, done[-1] + 1 if done else 0)
        yield ctx


def code_named_by(recipe: Recipe) -> list[str]:
    """Programs and modules the recipe would make this machine run, beyond selfimprove itself."""
    out = [
        f"{where}.vllm.python={cfg.vllm.python!r} (an interpreter)"
        for where, cfg, used in (
            ("generate", recipe.generate, recipe.generate.backend == "vllm"),
            ("judge.llm", recipe.judge.llm, recipe.judge.llm.backend == "vllm"),
        )
        if used and cfg.vllm.python
    ]
    return out + [f"monitor.extra_metrics: {m!r} (a Python module)" for m in recipe.monitor.extra_metrics]


def open_run(run_dir: str | Path, trust: bool = False) -> RunContext:
    """Reopen an existing run from its saved recipe. Unless ``trust`` (or inside a job the orchestrator launched), a
    recipe that names interpreters or modules is refused: a run directory can come from anyone."""
    path = Path(run_dir) / RECIPE
    if not path.exists():
        raise RunDirError(f"{run_dir} is not a run directory (no {RECIPE}). Start it with 'selfimprove run RECIPE'.")
    recipe = recipe_from_dict(saved_recipe(run_dir))
    named = code_named_by(recipe)
    if named and not trust and not in_launched_job():
        raise RunDirError(
            f"{run_dir}'s recipe names code this command would run: {'; '.join(named)}. If you trust "
            "this run directory, pass --trust-recipe."
        )
    return RunContext(recipe, run_dir)
