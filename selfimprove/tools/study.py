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
import io
import json
import logging
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from selfimprove.core.config import load_recipe, recipe_to_dict
from selfimprove.core.environment import run_environment
from selfimprove.core.errors import RunDirError
from selfimprove.core.files import write_json, write_text
from selfimprove.core.rundir import completed_rounds
from selfimprove.core.runlock import run_lock
from selfimprove.core.slurm import Sbatch, sbatch_script
from selfimprove.core.typed_yaml import ConfigError
from selfimprove.tools.check import check_recipe
from selfimprove.tools.stats import VERDICT_RULE, mean_ci, paired_difference
from selfimprove.tools.study_file import Arm, Study, StudyError, as_file, derived_file, load_study  # noqa: F401 (the CLI's API)
from selfimprove.tools.tables import markdown_table, show_table
from selfimprove.tools.verdicts import contrasts

logger = logging.getLogger("selfimprove.tools.study")

SAVED = "study.yaml"


def arm_recipe(study: Study, arm: Arm, check: bool = True) -> dict:
    """The arm's recipe as a mapping (base + overrides), parsed and checked as ``selfimprove check`` would; raises
    naming the arm. (``--smoke`` is passed on to each run, which applies its substitutions and checks itself.)"""
    try:
        recipe = load_recipe(str(study.base), arm.overrides)
    except ConfigError as err:
        raise StudyError(f"arm {arm.name!r}: its recipe is invalid:\n{err}") from None
    problems = check_recipe(recipe).problems if check else []
    if problems:
        raise StudyError(f"arm {arm.name!r}: its recipe cannot run:\n" + "\n".join(f"  - {x}" for x in problems))
    data = recipe_to_dict(recipe)
    data.pop("output_dir")
    data.pop("seed")
    return data


def _claim(study: Study, smoke: bool, check: bool = True) -> None:
    """Create the study directory, or check a rerun is the same study; write each arm's recipe."""

    # every arm checked before any run (a --smoke run applies its substitutions and checks itself)
    recipes = {a.name: arm_recipe(study, a, check=check and not smoke) for a in study.arms}
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
            write_text(path, text)
    if not saved.exists():
        write_text(saved, yaml.safe_dump(identity, sort_keys=False))
    write_json(
        study.output_dir / "plan.json",
        [{"arm": a, "seed": s, "run_dir": str(study.run_dir(a, s))} for a, s in study.runs()],
    )


def finished(study: Study, arm: str, seed: int) -> bool:
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
    t0 = time.perf_counter()
    # one array task's run checks its own recipe; the arms were checked when the script was written (--slurm)
    _claim(study, smoke, check=only is None)
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


def _metrics(study: Study, run_dir: Path) -> dict[int, dict]:
    """A run's metrics.jsonl by round, with the study's derived metrics added where all their terms are present."""
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    for row in rows:
        for name, op, of in study.derived:
            terms = [row.get(m) for m in of]
            if None not in terms:
                row[name] = terms[0] - terms[1] if op == "difference" else sum(terms) / len(terms)
    return {r["round"]: r for r in rows}


def aggregate(study: Study, timing: dict | None = None) -> dict:
    """study.json and study.csv from every run's metrics.jsonl (finished rounds only), each written once; ``timing``
    (the study's own cost so far) gets the aggregation's time and the total, and goes into study.json."""
    start = time.perf_counter()
    per_run = {(a, s): _metrics(study, study.run_dir(a, s)) for a, s in study.runs()}
    rounds = sorted({k for m in per_run.values() for k in m})
    out: dict = {
        "study": study.name,
        "baseline": study.baseline,
        "seeds": list(study.seeds),
        "metrics": list(study.metrics),
        "primary": list(study.primary),
        "match": [{"quantity": q, "tolerance": t} for q, t in study.match],
        "derived": derived_file(study),
        "method": {
            "arms": "mean, sample sd and t interval over seeds (95%); n = seeds present, the missing ones named",
            "differences": "arm - baseline per seed (same seeds), mean with paired t interval (95%)",
            "contrasts": "declared contrasts: paired t interval and p, exact sign-flip p, Holm-adjusted p over all "
            "of them",
            "verdict_rule": VERDICT_RULE + " 'unmatched': the two arms differ in a declared match quantity.",
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
                missing = [s for s, v in zip(study.seeds, values) if v is None]
                out["arms"][arm.name][str(k)][metric] = {**mean_ci(values), "values": values, "missing": missing}
        if arm.name == study.baseline:
            continue
        out["differences"][arm.name] = {}
        for k in rounds:
            out["differences"][arm.name][str(k)] = {}
            for metric in study.metrics:
                base = [per_run[(study.baseline, s)].get(k, {}).get(metric) for s in study.seeds]
                mine = [per_run[(arm.name, s)].get(k, {}).get(metric) for s in study.seeds]
                out["differences"][arm.name][str(k)][metric] = paired_difference(base, mine)
    out["contrasts"] = contrasts(study, per_run)
    out["final_round"] = max(rounds) if rounds else None
    if timing is not None:
        timing["aggregate_s"] = time.perf_counter() - start
        timing["total_s"] = sum(timing[k] for k in ("claim_s", "runs_s", "aggregate_s"))
        out["timing"] = timing
    write_json(study.output_dir / "study.json", out)
    _write_csv(study, out)
    write_text(study.output_dir / "study.md", markdown(out))
    write_bundle(study)
    return out


BUNDLE_RUN_FILES = ("metrics.jsonl", "environment.json", "recipe.yaml")
BUNDLE_FILES = ("study.json", "study.md", "study.csv", SAVED)
BUNDLE_MARK = "bundle.json"


def write_bundle(study: Study) -> Path:
    """STUDY_DIR/bundle: what a study's numbers are made of, small enough to commit (no checkpoints, no data): the
    aggregate, the study file and each arm's recipe, and per run its metrics.jsonl, environment.json and resolved
    recipe, laid out as the study directory is, so ``aggregate`` on the bundle (``selfimprove study
    BUNDLE/study_file.yaml --output_dir BUNDLE --aggregate``) recomputes study.json. A bundle holds no bundle."""
    out = study.output_dir / "bundle"
    if (study.output_dir / BUNDLE_MARK).exists():
        return study.output_dir
    shutil.rmtree(out, ignore_errors=True)
    (out / "recipes").mkdir(parents=True)
    for name in BUNDLE_FILES:
        shutil.copyfile(study.output_dir / name, out / name)
    write_text(out / "study_file.yaml", yaml.safe_dump({**as_file(study), "base": study.base.name}, sort_keys=False))
    shutil.copyfile(study.base, out / study.base.name)
    for arm in study.arms:
        shutil.copyfile(study.recipe_path(arm.name), out / "recipes" / f"{arm.name}.yaml")
    write_json(out / BUNDLE_MARK, {"study": study.name, "runs": [f"{a}/seed_{s}" for a, s in study.runs()]})
    for arm, seed in study.runs():
        src, dst = study.run_dir(arm, seed), out / arm / f"seed_{seed}"
        for name in BUNDLE_RUN_FILES:
            if (src / name).exists():
                dst.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / name, dst / name)
    return out


def _write_csv(study: Study, result: dict) -> None:
    path = study.output_dir / "study.csv"
    fh = io.StringIO(newline="")
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
    write_text(path, fh.getvalue())


def value_format(metric: str):
    """How a metric's values print: accuracies in percent, everything else to 3 decimals."""
    if metric.startswith("eval/accuracy"):
        return lambda x: "-" if x is None or x != x else f"{100 * x:.1f}"
    return _fmt


def _signed(f, x) -> str:
    return f"{'+' if x == x and x >= 0 else ''}{f(x)}"


def contrast_rows(result: dict) -> list[list[str]]:
    """One row per declared contrast: what is compared, B - A [95% t CI], per-seed differences, n, t p, sign-flip
    p, Holm p, verdict (and why a contrast is unmatched)."""
    rows = []
    for c in result.get("contrasts", []):
        f = value_format(c["metric"])
        unit = " (%)" if c["metric"].startswith("eval/accuracy") else ""
        why = "; ".join(c["unmatched"][:2]) + (" ..." if len(c["unmatched"]) > 2 else "")
        rows.append(
            [
                f"{c['arm']} - {c['vs']}",
                f"{c['metric']}{unit}",
                str(c["round"]),
                c["expect"],
                f"{_signed(f, c['mean'])} [{f(c['ci_low'])}, {f(c['ci_high'])}]",
                " / ".join(_signed(f, x) for x in c["per_pair"]),
                f"{c['n']}" + (f" (missing seeds {c['missing_seeds']})" if c["missing_seeds"] else ""),
                _fmt(c["p_value"]),
                _fmt(c["sign_flip_p"]),
                _fmt(c["holm_p"]),
                f"**{c['verdict']}**" + (f": {why}" if why else ""),
            ]
        )
    return rows


CONTRAST_HEAD = ["contrast (B - A)", "metric", "round", "expect", "B - A [95% CI]", "per seed", "n", "t p",
                 "sign-flip p", "Holm p", "verdict"]  # fmt: skip


FINAL_HEAD = ["arm", "metric", "n", "mean [95% CI]", "per seed", "diff [95% CI]", "p"]


def final_rows(result: dict) -> list[list[str]]:
    """One row per arm and metric of the final round: mean [95% t CI] over seeds, per-seed values, the paired
    difference against the baseline; eval accuracy in percent."""
    k, rows = str(result["final_round"]), []
    for arm, by_round in result["arms"].items():
        for metric, v in by_round.get(k, {}).items():
            d = result["differences"].get(arm, {}).get(k, {}).get(metric)
            f, pct = value_format(metric), metric.startswith("eval/accuracy")
            rows.append(
                [
                    arm,
                    f"{metric}{' (%)' if pct else ''}",
                    str(v["n"]),
                    f"{f(v['mean'])} [{f(v['ci_low'])}, {f(v['ci_high'])}]",
                    " / ".join(f(x) for x in v["values"]),
                    f"{_signed(f, d['mean'])} [{f(d['ci_low'])}, {f(d['ci_high'])}]" if d and d["n"] else "",
                    _fmt(d["p_value"]) if d else "",
                ]
            )
    return rows


def final_title(result: dict) -> str:
    return (
        f"Round {result['final_round']}; mean [95% t CI] over seeds {result['seeds']}; diff = arm - "
        f"{result['baseline']}, paired by seed."
    )


def _titles(result: dict) -> tuple[str, str]:
    """(the contrasts' title, the final round's title)."""
    return (
        f"Declared contrasts (primary: {', '.join(result['primary']) or '-'}); verdict rule: "
        f"{result['method']['verdict_rule']}",
        final_title(result),
    )


def markdown(result: dict) -> str:
    """The declared contrasts with their verdicts, then the final round as a Markdown table (for docs): mean
    [95% CI] per arm, n, per-seed values, paired difference against the baseline."""
    contrasts, final = _titles(result)
    lines = (
        [contrasts, "", *markdown_table(CONTRAST_HEAD, contrast_rows(result)), ""] if result.get("contrasts") else []
    )
    lines += [final, "", *markdown_table(FINAL_HEAD, final_rows(result))]
    return "\n".join(lines) + "\n"


def _fmt(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def print_table(result: dict) -> None:
    """The tables of study.md, on the console (rich on a terminal, the same Markdown when piped)."""
    contrasts, final = _titles(result)
    if result.get("contrasts"):
        show_table(f"study {result['study']}: {contrasts}", CONTRAST_HEAD, contrast_rows(result))
    show_table(f"study {result['study']}: {final}", FINAL_HEAD, final_rows(result))


def slurm_script(study: Study, smoke: bool = False) -> Path:
    """A Slurm job-array script, one task per arm x seed, for a study directory on a shared filesystem; its last
    line tells how to aggregate when the array is done."""
    _claim(study, smoke)
    out, c = study.output_dir.resolve(), study.slurm
    study_file = out / "study_file.yaml"
    write_text(study_file, yaml.safe_dump(as_file(study), sort_keys=False))
    opts = Sbatch(
        job_name=f"study-{study.name}",
        output=f"{out}/logs/slurm-%A_%a.out",
        array=f"0-{len(study.runs()) - 1}",
        partition=c.partition,
        gpus_per_node=c.gpus_per_node,
        cpus_per_task=c.cpus_per_task or study.threads,
        mem=c.mem,
        time=c.time,
        extra=tuple(c.sbatch_args),
    )
    cmd = [sys.executable, "-m", "selfimprove", "study", str(study_file), "--output_dir", str(out)]
    text = sbatch_script(
        opts,
        ["One task per arm x seed (plan.json lists them in order); a rerun of a task resumes its run."],
        [
            shlex.join(cmd) + " --only $SLURM_ARRAY_TASK_ID" + (" --smoke" if smoke else ""),
            f"# When every task is done: {shlex.join(cmd)} --aggregate",
        ],
    )
    path = study.output_dir / "study.sbatch"
    write_text(path, text)
    return path
