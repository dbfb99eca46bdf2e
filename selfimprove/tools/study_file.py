"""The study file, parsed by the recipes' typed machinery (did-you-mean on keys, every problem at once)::

    name: diversity
    base: rewrite_base.yaml                   # relative to the study file
    seeds: [0, 1, 2, 3, 4]
    overrides: {train.bootstrap_steps: 1000}  # every arm's, before its own (a study-wide shrink of the base)
    baseline: rules_8                         # default: the first arm
    metrics: [eval/accuracy/id, eval/accuracy/ood]            # reported
    derived:                                  # metrics computed in each run and round from its own
      - {name: id_minus_ood, op: difference, of: [eval/accuracy/id, eval/accuracy/ood]}   # A - B
      - {name: d11_12, op: mean, of: [eval/accuracy/d11, eval/accuracy/d12]}
    primary: [eval/accuracy/ood]              # declared before the run: the contrasts test these
    contrasts:                                # default: every arm against the baseline on every primary metric
      - {arm: rules_128, vs: rules_8, metric: eval/accuracy/ood, expect: greater}
    match:                                    # what the arms must share, from the compute ledger
      - {quantity: compute/total/optimizer_steps}
      - {quantity: compute/total/generated_tokens, tolerance: 0.05}
    arms:
      - {name: rules_8, overrides: {task.rewrite.train_rules: 8}}
      - {name: rules_128, overrides: {task.rewrite.train_rules: 128}}

The primary metrics, contrasts and match rules change only the aggregate, never a run.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from selfimprove.core.errors import UserError
from selfimprove.core.typed_yaml import ConfigError, build, load_yaml, option

DEFAULT_METRICS = (
    "eval/accuracy/id",
    "eval/accuracy/ood",
    "diversity/probe/answer_entropy",
    "diversity/probe/distinct_answers_per_prompt",
    "diversity/probe/ngram_vendi",
    "diversity/probe/distinct_2",
)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class StudyError(UserError):
    pass


def reserved_overrides(overrides: dict, field: str) -> list[str]:
    if {"seed", "output_dir"} & set(overrides):
        return [f"{field}: 'seed' and 'output_dir' are the study's to set (seeds, output_dir)."]
    return []


@dataclass
class ArmSpec:
    name: str = option("", "The arm's name (letters, digits, '_', '.', '-'): its folder and its label in tables.")
    overrides: dict = option(
        {}, "Recipe overrides of this arm, as the CLI's dotted keys: {task.rewrite.train_rules: 8}."
    )

    def check(self) -> list[str]:
        p = [] if NAME.match(self.name) else [f"name={self.name!r}: use letters, digits, '_', '.' or '-'."]
        return p + reserved_overrides(self.overrides, "overrides")


@dataclass
class ContrastSpec:
    arm: str = option("", "The arm tested (B).")
    vs: str = option("", "The arm it is compared with (A; default: the baseline). The difference is B - A, by seed.")
    metric: str = option("", "The metric compared (default: the first primary metric).")
    round: int = option(-1, "The round compared (-1: the last round every run reached).", ge=-1)
    expect: Literal["greater", "less"] = option("greater", "The direction the study's claim predicts for B - A.")


@dataclass
class DerivedSpec:
    name: str = option("", "The derived metric's name, used like any metric (primary, contrasts, metrics).")
    op: Literal["difference", "mean"] = option(
        "difference",
        "difference: of[0] - of[1] (a contrast on it tests an interaction: an arm's effect on one minus its effect "
        "on the other); mean: the mean of the metrics in of (pooled accuracy over equal-sized eval sets).",
    )
    of: list[str] = option([], "The metrics it is computed from, in this run and round.")

    def check(self) -> list[str]:
        p = [] if self.name else ["name: give the derived metric a name."]
        if (self.op == "difference" and len(self.of) != 2) or not self.of:
            p.append(f"of={self.of!r}: 'difference' takes two metrics [A, B] (A - B); 'mean' one or more.")
        return p


@dataclass
class MatchSpec:
    quantity: str = option("", "A metrics.jsonl key the arms must share at the compared round (compute/total/...).")
    tolerance: float = option(
        0.0, "Largest relative spread allowed between the arms of one seed: (max - min) / max.", ge=0, lt=1
    )


@dataclass
class StudySlurm:
    """The job array of ``selfimprove study --slurm``: one task per arm x seed."""

    partition: str = option("", "sbatch --partition ('' = the cluster's default).")
    time: str = option("04:00:00", "sbatch --time of each task (one run).")
    mem: str = option("16G", "sbatch --mem of each task.")
    cpus_per_task: int = option(0, "sbatch --cpus-per-task (0 = the study's threads).", ge=0)
    gpus_per_node: int = option(0, "sbatch --gpus-per-node (0 = not asked for).", ge=0)
    sbatch_args: list[str] = option([], "More sbatch options, one per item, e.g. ['--account=proj'].")


@dataclass
class StudyFile:
    name: str = option("", "The study's name (default: the file's name).")
    base: str = option("", "The base recipe, relative to the study file.")
    seeds: list[int] = option([0, 1, 2, 3, 4], "Seeds, the same for every arm (a difference is paired by seed).")
    overrides: dict = option({}, "Recipe overrides of every arm, applied before the arm's own (which win).")
    arms: list[ArmSpec] = option([], "The arms: each a name and recipe overrides.")
    baseline: str = option("", "The arm the others are compared with by default (default: the first).")
    metrics: list[str] = option(list(DEFAULT_METRICS), "Metrics reported per arm and round (secondary unless primary).")
    primary: list[str] = option([], "Primary metrics, declared before the run: the contrasts test them.")
    derived: list[DerivedSpec] = option([], "Metrics computed in each run and round from its own metrics.")
    contrasts: list[ContrastSpec] = option([], "Declared contrasts (default: each arm vs the baseline, each primary).")
    match: list[MatchSpec] = option(
        [], "Quantities the arms must share (compute ledger); unmatched arms get no verdict."
    )
    threads: int = option(1, "Torch threads of every run (a run's numbers depend on it).", ge=1)
    output_dir: str = option("", "Where the study's runs go (default: runs/studies/NAME).")
    slurm: StudySlurm = field(default_factory=StudySlurm, metadata={"help": "The job array of study --slurm."})

    def check(self) -> list[str]:
        p = reserved_overrides(self.overrides, "overrides")
        if not self.base:
            p.append("base: name the base recipe file, relative to the study file.")
        if not self.seeds or len(set(self.seeds)) < len(self.seeds) or min(self.seeds) < 0:
            p.append(f"seeds={self.seeds}: give distinct non-negative integers, e.g. [0, 1, 2, 3, 4].")
        names = [a.name for a in self.arms]
        if not names:
            p.append("arms: give a non-empty list of {name: ..., overrides: {dotted.key: value}}.")
        if len(set(names)) < len(names):
            p.append(f"arms: arm names must differ: {names}.")
        for name, value in [("baseline", self.baseline)] + [
            (f"contrasts[{i}].{f}", getattr(c, f)) for i, c in enumerate(self.contrasts) for f in ("arm", "vs")
        ]:
            if value and value not in names:
                p.append(f"{name}={value!r} is not an arm ({', '.join(names)}).")
        for i, c in enumerate(self.contrasts):
            if not c.arm:
                p.append(f"contrasts[{i}].arm: name the arm tested.")
            if not c.metric and not self.primary:
                p.append(f"contrasts[{i}].metric: name it, or declare primary metrics.")
        if self.contrasts and not self.primary:
            p.append("primary: a study that declares contrasts declares its primary metric(s) too.")
        for i, m in enumerate(self.match):
            if not m.quantity:
                p.append(f"match[{i}].quantity: name a metrics.jsonl key, e.g. compute/total/generated_tokens.")
        return p


@dataclass(frozen=True)
class Arm:
    name: str
    overrides: dict


@dataclass(frozen=True)
class Contrast:
    arm: str
    vs: str
    metric: str
    round: int
    expect: str


@dataclass(frozen=True)
class Study:
    name: str
    base: Path
    seeds: tuple[int, ...]
    arms: tuple[Arm, ...]
    baseline: str
    metrics: tuple[str, ...]
    output_dir: Path
    slurm: StudySlurm
    threads: int = 1
    primary: tuple[str, ...] = ()
    contrasts: tuple[Contrast, ...] = ()
    match: tuple[tuple[str, float], ...] = ()
    derived: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # (name, op, of)

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


def load_study(path: str | Path, output_dir: str | None = None) -> Study:
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"study file {str(path)!r} does not exist.")
    try:
        raw = load_yaml(str(path))
    except ConfigError as err:
        raise StudyError(str(err)) from None
    problems: list[str] = []
    spec = build(StudyFile, raw, "", problems)
    if spec.base and not (path.parent / spec.base).is_file():
        problems.append(f"base={spec.base!r}: no such file next to the study file ({path.parent}).")
    if problems:
        raise StudyError(f"invalid study file {path}:\n" + "\n".join(f"  - {p}" for p in problems))
    arms = tuple(Arm(a.name, {**spec.overrides, **a.overrides}) for a in spec.arms)
    baseline = spec.baseline or arms[0].name
    contrasts = tuple(
        Contrast(c.arm, c.vs or baseline, c.metric or spec.primary[0], c.round, c.expect) for c in spec.contrasts
    ) or tuple(Contrast(a.name, baseline, m, -1, "greater") for m in spec.primary for a in arms if a.name != baseline)
    metrics = tuple(dict.fromkeys([*spec.primary, *spec.metrics, *(c.metric for c in contrasts)]))
    name = spec.name or path.stem
    return Study(
        name,
        (path.parent / spec.base).resolve(),
        tuple(spec.seeds),
        arms,
        baseline,
        metrics,
        Path(output_dir or spec.output_dir or Path("runs") / "studies" / name),
        spec.slurm,
        spec.threads,
        tuple(spec.primary),
        contrasts,
        tuple((m.quantity, m.tolerance) for m in spec.match),
        tuple((d.name, d.op, tuple(d.of)) for d in spec.derived),
    )


def derived_file(study: Study) -> list[dict]:
    return [{"name": name, "op": op, "of": list(of)} for name, op, of in study.derived]


def as_file(study: Study) -> dict:
    """The study as a study file (the Slurm array's tasks read it)."""
    return {
        "name": study.name,
        "base": str(study.base),
        "seeds": list(study.seeds),
        "baseline": study.baseline,
        "threads": study.threads,
        "metrics": list(study.metrics),
        "primary": list(study.primary),
        "contrasts": [dataclasses.asdict(c) for c in study.contrasts],
        "match": [{"quantity": q, "tolerance": t} for q, t in study.match],
        "derived": derived_file(study),
        "arms": [dataclasses.asdict(a) for a in study.arms],
        "slurm": dataclasses.asdict(study.slurm),
    }
