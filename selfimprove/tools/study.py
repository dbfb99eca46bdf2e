"""``selfimprove study STUDY.yaml``: a controlled experiment, arms x seeds, each an ordinary run directory.

A study file names a base recipe, the arms (a name and recipe overrides, the CLI's dotted keys), the seeds and the
metrics to compare::

    name: rewrite_diversity
    base: ../recipes/studies/rewrite.yaml     # relative to the study file
    seeds: [0, 1, 2]
    baseline: few_rules                       # default: the first arm
    metrics: [eval/accuracy/id, eval/accuracy/ood]
    arms:
      - {name: few_rules, overrides: {task.rewrite.train_rules: 8}}
      - {name: many_rules, overrides: {task.rewrite.train_rules: 64}}

Layout: ``STUDY_DIR/study.yaml`` (the study as first run), ``STUDY_DIR/recipes/<arm>.yaml`` (base + overrides),
``STUDY_DIR/<arm>/seed_<s>/`` (a run: resume, report, compare and monitor work on it), ``STUDY_DIR/logs/``, and the
aggregate ``study.json`` / ``study.csv``. Rerunning skips finished runs and resumes the others; a study whose
arms, seeds or base recipe changed is refused (metrics may change: they only change the aggregate). Every arm's
recipe is checked before any run starts.

Each run gets ``threads`` torch threads (default 1; part of the study): a run's numbers depend on its thread count,
so ``--jobs`` changes only how many run at once, never a number.

Statistics (selfimprove.tools.stats): per arm and round, mean, sd and the t interval over seeds; per arm against the
baseline, the paired difference (same seeds) with its paired t interval, because a percentile bootstrap over 3-5
seeds has only a handful of distinct resamples.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from selfimprove.core.errors import RunDirError, UserError

logger = logging.getLogger("selfimprove.tools.study")

DEFAULT_METRICS = (
    "eval/accuracy/id",
    "eval/accuracy/ood",
    "diversity/probe/answer_entropy",
    "diversity/probe/distinct_answers_per_prompt",
    "diversity/probe/ngram_vendi",
    "diversity/probe/distinct_2",
)
SAVED = "study.yaml"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class StudyError(UserError):
    pass


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str
    overrides: dict


@dataclasses.dataclass(frozen=True)
class Study:
    name: str
    base: Path
    seeds: tuple[int, ...]
    arms: tuple[Arm, ...]
    baseline: str
    metrics: tuple[str, ...]
    output_dir: Path
    slurm: dict
    threads: int = 1

    def run_dir(self, arm: str, seed: int) -> Path:
        return self.output_dir / arm / f"seed_{seed}"

    def recipe_path(self, arm: str) -> Path:
        return self.output_dir / "recipes" / f"{arm}.yaml"

    def runs(self) -> list[tuple[str, int]]:
        return [(a.name, s) for a in self.arms for s in self.seeds]

    def identity(self) -> dict:
        """What the runs depend on: a change here is another study."""
        return {
            "base": yaml.safe_load(self.base.read_text()),
            "arms": [dataclasses.asdict(a) for a in self.arms],
            "seeds": list(self.seeds),
            "threads": self.threads,
        }


def _fail(field: str, fix: str) -> StudyError:
    return StudyError(f"study field '{field}': {fix}")


def _arms(raw) -> tuple[Arm, ...]:
    if not isinstance(raw, list) or not raw:
        raise _fail("arms", "give a non-empty list of {name: ..., overrides: {dotted.key: value}}.")
    arms = []
    for i, a in enumerate(raw):
        if not isinstance(a, dict) or not isinstance(a.get("name"), str) or not NAME.match(a["name"]):
            raise _fail(f"arms[{i}].name", "each arm needs a name of letters, digits, '_', '.' or '-'.")
        if not isinstance(a.get("overrides", {}), dict) or set(a) - {"name", "overrides"}:
            raise _fail(f"arms[{i}]", "an arm has only 'name' and 'overrides' (a mapping of dotted recipe keys).")
        if "seed" in a.get("overrides", {}) or "output_dir" in a.get("overrides", {}):
            raise _fail(f"arms[{i}].overrides", "'seed' and 'output_dir' are the study's to set (seeds, output_dir).")
        arms.append(Arm(a["name"], dict(a.get("overrides") or {})))
    names = [a.name for a in arms]
    if len(set(names)) < len(names):
        raise _fail("arms", f"arm names must differ: {names}.")
    return tuple(arms)


def load_study(path: str | Path, output_dir: str | None = None) -> Study:
    from selfimprove.core.typed_yaml import load_yaml

    path = Path(path)
    if not path.is_file():
        raise StudyError(f"study file {str(path)!r} does not exist.")
    raw = load_yaml(str(path)) or {}
    unknown = set(raw) - {"name", "base", "seeds", "arms", "baseline", "metrics", "output_dir", "slurm", "threads"}
    if unknown:
        raise _fail(
            ", ".join(sorted(unknown)),
            "unknown field; a study has name, base, seeds, arms, baseline, metrics, threads, output_dir and slurm.",
        )
    threads = raw.get("threads", 1)
    if not isinstance(threads, int) or threads < 1:
        raise _fail("threads", "give the torch thread count of every run, an integer >= 1 (default 1).")
    if not isinstance(raw.get("base"), str) or not (path.parent / raw["base"]).is_file():
        raise _fail("base", f"name the base recipe file, relative to the study file ({raw.get('base')!r} not found).")
    seeds = raw.get("seeds", [0, 1, 2])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and s >= 0 for s in seeds)
        or len(set(seeds)) < len(seeds)
    ):
        raise _fail("seeds", "give a list of distinct non-negative integers, e.g. [0, 1, 2].")
    arms = _arms(raw.get("arms"))
    baseline = raw.get("baseline", arms[0].name)
    if baseline not in {a.name for a in arms}:
        raise _fail("baseline", f"{baseline!r} is not an arm ({', '.join(a.name for a in arms)}).")
    metrics = raw.get("metrics", list(DEFAULT_METRICS))
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise _fail("metrics", "give a list of metric names as metrics.jsonl spells them.")
    name = raw.get("name", path.stem)
    out = Path(output_dir or raw.get("output_dir") or Path("runs") / "studies" / name)
    return Study(
        name,
        (path.parent / raw["base"]).resolve(),
        tuple(seeds),
        arms,
        baseline,
        tuple(metrics),
        out,
        dict(raw.get("slurm") or {}),
        threads,
    )


def arm_recipe(study: Study, arm: Arm) -> dict:
    """The arm's recipe as a mapping (base + overrides), parsed and checked; raises naming the arm. (``--smoke``
    is passed on to each run, which applies its substitutions itself.)"""
    from selfimprove.core.config import load_recipe, recipe_to_dict
    from selfimprove.core.typed_yaml import ConfigError

    try:
        recipe = load_recipe(str(study.base), arm.overrides)
    except ConfigError as err:
        raise StudyError(f"arm {arm.name!r}: its recipe is invalid:\n{err}") from None
    data = recipe_to_dict(recipe)
    data.pop("output_dir")
    data.pop("seed")
    return data


def _claim(study: Study, smoke: bool) -> None:
    """Create the study directory, or check a rerun is the same study; write each arm's recipe."""
    from selfimprove.core.atomic import write_json

    recipes = {a.name: arm_recipe(study, a) for a in study.arms}  # every arm checked before any run
    saved = study.output_dir / SAVED
    identity = {**study.identity(), "smoke": smoke}
    if saved.exists():
        old = yaml.safe_load(saved.read_text())
        if old != identity:
            changed = [k for k in identity if old.get(k) != identity[k]]
            raise StudyError(
                f"{study.output_dir} holds a study with other {', '.join(changed)}: a changed study is another "
                "study. Restore the study file (its first version is in study.yaml there), or choose a new "
                "output_dir."
            )
    elif study.output_dir.exists() and any(study.output_dir.iterdir()):
        raise RunDirError(
            f"{study.output_dir} is not empty and is not a selfimprove study: choose a new or empty output_dir."
        )
    (study.output_dir / "recipes").mkdir(parents=True, exist_ok=True)
    (study.output_dir / "logs").mkdir(exist_ok=True)
    for name, data in recipes.items():
        text = yaml.safe_dump(data, sort_keys=False)
        path = study.recipe_path(name)
        if not path.exists() or path.read_text() != text:
            _write_text(path, text)
    if not saved.exists():
        _write_text(saved, yaml.safe_dump(identity, sort_keys=False))
    write_json(
        study.output_dir / "plan.json",
        [{"arm": a, "seed": s, "run_dir": str(study.run_dir(a, s))} for a, s in study.runs()],
    )


def _write_text(path: Path, text: str) -> None:
    """Atomic, and safe when several Slurm tasks of one study write the same file at once."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def finished(study: Study, arm: str, seed: int) -> bool:
    from selfimprove.core.rundir import completed_rounds

    rounds = yaml.safe_load(study.recipe_path(arm).read_text())["rounds"]
    done = completed_rounds(study.run_dir(arm, seed))
    return bool(done) and done[-1] >= rounds


def run_command(study: Study, arm: str, seed: int, smoke: bool = False) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "selfimprove",
        "run",
        str(study.recipe_path(arm)),
        "--seed",
        str(seed),
        "--output_dir",
        str(study.run_dir(arm, seed)),
    ]
    return cmd + ["--smoke"] if smoke else cmd


def _one(study: Study, arm: str, seed: int, threads: int, smoke: bool) -> int:
    if finished(study, arm, seed):
        return 0
    log = study.output_dir / "logs" / f"{arm}-seed_{seed}.log"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    logger.info("start %s seed %d (log: %s)", arm, seed, log)
    with open(log, "a") as fh:
        rc = subprocess.run(
            run_command(study, arm, seed, smoke), stdout=fh, stderr=subprocess.STDOUT, env=env, check=False
        ).returncode
    logger.info("%s %s seed %d", "done" if rc == 0 else f"FAILED (exit {rc}; see {log})", arm, seed)
    return rc


def run_study(study: Study, jobs: int = 1, smoke: bool = False, only: int | None = None) -> dict:
    """Run (or resume) every arm x seed, ``jobs`` at a time, then aggregate; ``only`` runs one (a Slurm task)."""
    from selfimprove.core.runlock import run_lock

    t0 = time.perf_counter()
    _claim(study, smoke)
    runs = study.runs() if only is None else [study.runs()[only]]
    # A run's numbers depend on its thread count (the order of float reductions), so the study fixes it, not --jobs:
    # any --jobs, or a Slurm array, gives the same runs.
    threads = study.threads
    if jobs * threads > (os.cpu_count() or 1):
        logger.warning(
            "--jobs %d x %d threads a run > %d cores: runs will contend (slower, same numbers)",
            jobs,
            threads,
            os.cpu_count(),
        )
    if only is not None:
        rc = _one(study, *runs[0], threads=threads, smoke=smoke)
        if rc:
            raise StudyError(f"run {runs[0]} failed (exit {rc}); see {study.output_dir / 'logs'}.")
        return {}
    with run_lock(study.output_dir, "study"):
        t1 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            codes = list(pool.map(lambda r: _one(study, *r, threads=threads, smoke=smoke), runs))
        t2 = time.perf_counter()
        # what the study itself cost, beside its runs (scripts/bench_study.py reads it); aggregate adds its own time
        timing = {"jobs": jobs, "threads_per_run": threads, "claim_s": t1 - t0, "runs_s": t2 - t1}
        result = aggregate(study, timing)
    failed = [f"{a} seed {s}" for (a, s), rc in zip(runs, codes) if rc]
    if failed:
        raise StudyError(
            f"{len(failed)} run(s) failed: {', '.join(failed)}; see {study.output_dir / 'logs'}. The "
            "aggregate covers the finished runs; rerun the study to resume the others."
        )
    return result


def _metrics(run_dir: Path) -> dict[int, dict]:
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return {r["round"]: r for r in rows}


def aggregate(study: Study, timing: dict | None = None) -> dict:
    """study.json and study.csv from every run's metrics.jsonl (finished rounds only), each written once; ``timing``
    (the study's own cost so far) gets the aggregation's time and the total, and goes into study.json."""
    start = time.perf_counter()
    from selfimprove.core.atomic import write_json
    from selfimprove.core.environment import run_environment
    from selfimprove.tools.stats import mean_ci, paired_difference

    per_run = {(a, s): _metrics(study.run_dir(a, s)) for a, s in study.runs()}
    rounds = sorted({k for m in per_run.values() for k in m})
    out: dict = {
        "study": study.name,
        "baseline": study.baseline,
        "seeds": list(study.seeds),
        "metrics": list(study.metrics),
        "method": {
            "arms": "mean, sample sd and t interval over seeds (95%)",
            "differences": "arm - baseline per seed (same seeds), mean with paired t interval (95%)",
        },
        "runs": {
            f"{a}/seed_{s}": {"rounds": sorted(m), "environment": run_environment(study.run_dir(a, s))}
            for (a, s), m in per_run.items()
        },
        "arms": {},
        "differences": {},
    }
    for arm in study.arms:
        out["arms"][arm.name] = {}
        for k in rounds:
            out["arms"][arm.name][str(k)] = {}
            for metric in study.metrics:
                values = [per_run[(arm.name, s)].get(k, {}).get(metric) for s in study.seeds]
                out["arms"][arm.name][str(k)][metric] = {**mean_ci(values), "values": values}
        if arm.name == study.baseline:
            continue
        out["differences"][arm.name] = {}
        for k in rounds:
            out["differences"][arm.name][str(k)] = {}
            for metric in study.metrics:
                base = [per_run[(study.baseline, s)].get(k, {}).get(metric) for s in study.seeds]
                mine = [per_run[(arm.name, s)].get(k, {}).get(metric) for s in study.seeds]
                out["differences"][arm.name][str(k)][metric] = paired_difference(base, mine)
    out["final_round"] = max(rounds) if rounds else None
    if timing is not None:
        timing["aggregate_s"] = time.perf_counter() - start
        timing["total_s"] = sum(timing[k] for k in ("claim_s", "runs_s", "aggregate_s"))
        out["timing"] = timing
    write_json(study.output_dir / "study.json", out)
    _write_csv(study, out)
    _write_text(study.output_dir / "study.md", markdown(out))
    return out


def _write_csv(study: Study, result: dict) -> None:
    path = study.output_dir / "study.csv"
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "arm",
                "round",
                "metric",
                "n",
                "mean",
                "sd",
                "ci_low",
                "ci_high",
                "diff_vs_baseline",
                "diff_ci_low",
                "diff_ci_high",
                "diff_p",
                *[f"seed_{s}" for s in study.seeds],
            ]
        )
        for arm, by_round in result["arms"].items():
            for k, by_metric in by_round.items():
                for metric, v in by_metric.items():
                    d = result["differences"].get(arm, {}).get(k, {}).get(metric, {})
                    w.writerow(
                        [
                            arm,
                            k,
                            metric,
                            v["n"],
                            v["mean"],
                            v["sd"],
                            v["ci_low"],
                            v["ci_high"],
                            d.get("mean", ""),
                            d.get("ci_low", ""),
                            d.get("ci_high", ""),
                            d.get("p_value", ""),
                            *v["values"],
                        ]
                    )
    os.replace(tmp, path)


def markdown(result: dict) -> str:
    """The final round as a Markdown table (for docs): mean [95% CI] per arm, per-seed values, paired difference."""
    k = str(result["final_round"])
    lines = [
        f"Round {k}; mean [95% t CI] over seeds {result['seeds']}; diff = arm - {result['baseline']}, paired by seed.",
        "",
        "| arm | metric | mean [95% CI] | per seed | diff [95% CI] | p |",
        "|---|---|---|---|---|---|",
    ]
    for arm, by_round in result["arms"].items():
        for metric, v in by_round.get(k, {}).items():
            d = result["differences"].get(arm, {}).get(k, {}).get(metric)
            pct = metric.startswith("eval/accuracy")
            f = (lambda x: "-" if x is None or x != x else f"{100 * x:.1f}") if pct else _fmt  # noqa: E731
            diff = (
                f"{'+' if d['mean'] >= 0 else ''}{f(d['mean'])} [{f(d['ci_low'])}, {f(d['ci_high'])}]"
                if d and d["n"]
                else ""
            )
            lines.append(
                f"| {arm} | {metric}{' (%)' if pct else ''} | {f(v['mean'])} [{f(v['ci_low'])}, {f(v['ci_high'])}] | "
                f"{' / '.join(f(x) for x in v['values'])} | {diff} | {_fmt(d['p_value']) if d else ''} |"
            )
    return "\n".join(lines) + "\n"


def _fmt(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    k = str(result["final_round"])
    table = Table(
        title=f"study {result['study']}: round {k}, mean [95% t CI] over seeds; diff = arm - "
        f"{result['baseline']} (paired)"
    )
    for col in ("arm", "metric", "n", "mean [CI]", "per seed", "diff [CI]", "p"):
        table.add_column(col)
    for arm, by_round in result["arms"].items():
        for metric, v in by_round.get(k, {}).items():
            d = result["differences"].get(arm, {}).get(k, {}).get(metric)
            table.add_row(
                arm,
                metric,
                str(v["n"]),
                f"{_fmt(v['mean'])} [{_fmt(v['ci_low'])}, {_fmt(v['ci_high'])}]",
                " ".join(_fmt(x) for x in v["values"]),
                f"{d['mean']:+.3f} [{_fmt(d['ci_low'])}, {_fmt(d['ci_high'])}]" if d and d["n"] else "",
                _fmt(d["p_value"]) if d else "",
            )
    Console().print(table)


def slurm_script(study: Study, smoke: bool = False) -> Path:
    """A Slurm job-array script, one task per arm x seed, for a study directory on a shared filesystem; its last
    line tells how to aggregate when the array is done."""
    _claim(study, smoke)
    s = {"cpus_per_task": study.threads, "time": "04:00:00", "mem": "16G", **study.slurm}
    extra = "".join(f"#SBATCH --{k.replace('_', '-')}={v}\n" for k, v in s.items())
    n = len(study.runs())
    study_file = study.output_dir.resolve() / "study_file.yaml"
    _write_text(study_file, yaml.safe_dump(_as_file(study), sort_keys=False))
    cmd = [
        sys.executable,
        "-m",
        "selfimprove",
        "study",
        str(study_file),
        "--output_dir",
        str(study.output_dir.resolve()),
        "--only",
        "$SLURM_ARRAY_TASK_ID",
        *(["--smoke"] if smoke else []),
    ]
    text = (
        f"#!/bin/bash\n#SBATCH --job-name=study-{study.name}\n#SBATCH --array=0-{n - 1}\n{extra}"
        f"#SBATCH --output={study.output_dir.resolve()}/logs/slurm-%A_%a.out\n"
        "# One task per arm x seed (plan.json lists them in order); a rerun of a task resumes its run.\n"
        + " ".join(cmd)
        + "\n"
        f"# When every task is done: {sys.executable} -m selfimprove study {study_file} --output_dir "
        f"{study.output_dir.resolve()} --aggregate\n"
    )
    path = study.output_dir / "study.sbatch"
    _write_text(path, text)
    return path


def _as_file(study: Study) -> dict:
    return {
        "name": study.name,
        "base": str(study.base),
        "seeds": list(study.seeds),
        "baseline": study.baseline,
        "threads": study.threads,
        "metrics": list(study.metrics),
        "arms": [dataclasses.asdict(a) for a in study.arms],
        "slurm": study.slurm,
    }
