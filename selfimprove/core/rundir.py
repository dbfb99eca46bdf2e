"""The on-disk layout of a run, and the one way every stage writes its outputs.

    RUN_DIR/
      recipe.yaml                  the recipe in force (a rerun with a different one is refused)
      recipes/                     every recipe the run has had, from which round each applied (history.json)
      base_model/                  round-0 starting policy (bootstrap builds it here)
      eval_sets/ probe_set/ seed_data/   fixed eval problems, probe prompts and labelled seed data, made once
      round_00/train/ ...          round 0: bootstrap on seed data
      round_01/{propose,generate,judge,filter,select,train,evaluate,monitor}/   (propose only when it runs)
      metrics.jsonl                one line per completed round, rebuilt from round_*/monitor/metrics.json
      logs/                        tracebacks of unexpected errors

How a stage writes its folder: selfimprove.core.atomic. ``RunContext`` is what every stage is given.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

from selfimprove import registry
from selfimprove.core import decisions, timing
from selfimprove.core.atomic import atomic_stage, is_done
from selfimprove.core.config import Recipe, recipe_hash
from selfimprove.core.files import read_json, write_text
from selfimprove.core.integrity import check_content, file_hash, read_stage_json, stage_digest
from selfimprove.core.model import base_model_path
from selfimprove.core.prompts import PROPOSAL_LINEAGE, PromptFormat, prompt_content, prompt_key
from selfimprove.core.rows import load_rows
from selfimprove.registry import build_task

ROUND_DIR = re.compile(r"^round_(\d+)$")
SETUP_DIRS = ("base_model", "eval_sets", "probe_set", "seed_data", "reward_model")


def round_dir(run_dir: str | Path, k: int) -> Path:
    return Path(run_dir) / f"round_{k:02d}"


def stage_dir(run_dir: str | Path, k: int, stage: str) -> Path:
    return round_dir(run_dir, k) / stage


def round_numbers(run_dir: str | Path) -> list[int]:
    """Every round folder's number, in order (round_00 ... round_99, round_100, ...)."""
    found = [ROUND_DIR.match(p.name) for p in Path(run_dir).iterdir()] if Path(run_dir).is_dir() else []
    return sorted(int(m.group(1)) for m in found if m)


def completed_rounds(run_dir: str | Path) -> list[int]:
    return [k for k in round_numbers(run_dir) if is_done(stage_dir(run_dir, k, "monitor"))]


def rebuild_metrics(run_dir: str | Path) -> list[dict]:
    """Rewrite metrics.jsonl from every completed round's monitor output, with the round's time accounting
    (round_KK/timing.json, written by the orchestrator after the monitor): a rerun can never duplicate a line."""
    run_dir = Path(run_dir)
    lines = []
    for k in completed_rounds(run_dir):
        mon = stage_dir(run_dir, k, "monitor")
        if is_done(mon):
            times = mon.parent / timing.FILE
            lines.append(
                {**read_stage_json(mon / "metrics.json", run_dir), **(read_json(times) if times.exists() else {})}
            )
    write_text(run_dir / "metrics.jsonl", "".join(json.dumps(m, sort_keys=True) + "\n" for m in lines))
    return lines


def accepted_rows(ctx: RunContext, before: int) -> list[dict]:
    """The rows the select stage accepted in rounds 1..before-1 (the training history a round builds on)."""
    rows = []
    for j in range(1, before):
        d = ctx.stage(j, "select")
        if is_done(d) and not ctx.rolled_back(j):
            rows += [r for r in load_rows(d / "data") if r["selected"]]
    return rows


def earlier_prompts(ctx: RunContext, k: int) -> list[str]:
    """Every distinct prompt text of rounds 1..k-1 (selfimprove.core.prompts.prompt_content): those generated from and
    those the propose stage kept."""
    out: list[str] = []
    for j in range(1, k):
        for name, sub in (("generate", "data"), ("propose", "prompts")):
            if is_done(ctx.stage(j, name)):
                rows = load_rows(ctx.stage(j, name) / sub, ("prompt", "source_prompt"))  # not every sample's text
                out += [prompt_content(r) for r in rows]
    return list(dict.fromkeys(out))


class RunContext:
    """What every stage needs: the recipe, the run directory and the task (built once per process)."""

    def __init__(self, recipe: Recipe, run_dir: str | Path):
        self.recipe, self.run_dir, self.task = recipe, Path(run_dir), build_task(recipe)
        self.recipe_hash = recipe_hash(recipe)

    def stage(self, k: int, name: str) -> Path:
        return stage_dir(self.run_dir, k, name)

    def stages(self, k: int) -> tuple[str, ...]:
        """The stages round k runs, in order (selfimprove.registry.STAGES; round 0 only trains on the seed data)."""
        if k == 0:
            return registry.ROUND0_STAGES
        names = registry.ONLINE_STAGES if self.online(k) else registry.STAGES
        return tuple(s for s in names if s != "propose" or self.recipe.propose.runs)

    def online(self, k: int) -> bool:
        """Whether round k trains online (GRPO): the trainer samples and judges, and its rollouts are the data."""
        return k > 0 and self.recipe.train.method == "grpo"

    def round_prompts(self, k: int) -> list[dict]:
        """Round k's prompts: the task's, or with a propose stage its kept proposals first (propose.share of them, as
        many as survived) and the task's prompts for the rest, every row with its lineage."""
        prompts = self.task.round_prompts(k, self.history(k), self.excluded_prompts())
        if not self.recipe.propose.runs:
            return prompts
        folder = self.stage(k, "propose")
        proposed = load_rows(folder / "prompts")[: read_json(folder / "meta.json")["wanted"]]
        if not proposed:
            return [{**p, **PROPOSAL_LINEAGE} for p in prompts]
        blank = {key: "" if isinstance(v, str) else -1 for key, v in (prompts or proposed)[0].items()}
        own = [
            {**{key: p.get(key, blank[key]) for key in blank}, **{key: p[key] for key in PROPOSAL_LINEAGE}}
            for p in proposed
        ]
        return own + [{**p, **PROPOSAL_LINEAGE} for p in prompts[: len(prompts) - len(own)]]

    def folder(self, k: int | None, name: str) -> Path:
        """Round k's stage folder, or with k None a setup folder (base_model, eval_sets, ...)."""
        return self.run_dir / name if k is None else self.stage(k, name)

    @contextlib.contextmanager
    def writing(self, k: int | None, name: str, meta: dict | None = None):
        """``atomic_stage`` for a stage of this run: its meta records the recipe's hash and the stage's model-bound
        compute (``compute_s``, selfimprove.core.timing), its DONE the inputs' digests."""
        meta = {**(meta or {}), "recipe": self.recipe_hash}
        folders = self.input_paths(k, name)
        for folder in folders:  # a damaged input is refused before anything is made from it
            check_content(folder, self.run_dir)
        with atomic_stage(self.folder(k, name), meta, self.inputs(k, name, folders)) as (out, m), timing.recorded(m):
            yield out, m

    def _checkpoint_stage(self, j: int) -> Path | None:
        if j >= 0:
            return self.stage(j, "train")
        return self.run_dir / "base_model" if self.recipe.model.path is None else None

    def input_paths(self, k: int | None, name: str) -> list[Path]:
        """The folders a stage reads: the one table of which stage depends on which."""
        run = self.run_dir
        if k is None:
            if name == "reward_model":
                return [p for p in (run / "seed_data", self.stage(0, "train")) if is_done(p)]
            return {"probe_set": [run / "eval_sets"], "seed_data": [run / "eval_sets", run / "probe_set"]}.get(name, [])
        return [p for p in self.input_table(k)[name] if p is not None and is_done(p)]

    def input_table(self, k: int) -> dict[str, list[Path | None]]:
        """{stage: the folders it may read in round k}, one entry per stage of the registry (a test checks)."""
        run, r = self.run_dir, self.recipe
        before = lambda stage, lo=0: [self.stage(j, stage) for j in range(lo, k)]  # noqa: E731
        init = -1 if (k == 0 or r.train.init == "base") else k - 1
        return {
            "propose": [self._checkpoint_stage(k - 1), run / "eval_sets", run / "probe_set", *before("generate", 1)]
            + before("propose", 1)
            + before("monitor"),
            "generate": [
                self._checkpoint_stage(k - 1),
                run / "eval_sets",
                run / "probe_set",
                self.stage(k, "propose"),
                *before("monitor"),
            ],
            "judge": [self.stage(k, "generate"), self._checkpoint_stage(k - 1), run / "reward_model"],
            "filter": [self.stage(k, "judge"), run / "eval_sets", run / "probe_set"],
            "select": [self.stage(k, "filter"), *before("select", 1), *before("monitor")],
            "train": [self._checkpoint_stage(init), run / "seed_data", *before("select", 1), *before("filter", 1)]
            + ([self.stage(k, "select"), self.stage(k, "filter")] if k else [])
            + [self.stage(j, "propose") for j in range(1, k + 1)]
            + (
                [run / "eval_sets", run / "probe_set", run / "reward_model", *before("monitor")]
                if self.online(k)
                else []
            ),
            "evaluate": [self.stage(k, "train"), run / "eval_sets", run / "probe_set"],
            "monitor": [self.stage(k, "evaluate"), self.stage(k, "train"), run / "reward_model", *before("monitor")]
            + ([self.stage(k, "propose"), *before("generate", 1)] if r.propose.runs or r.monitor.prompt_metrics else [])
            + ([self.stage(k, n) for n in ("generate", "judge", "filter", "select")] if k else [])
            + ([self._checkpoint_stage(k - 1)] if k else []),
        }

    def inputs(self, k: int | None, name: str, folders: list[Path] | None = None) -> dict[str, str]:
        """{input: digest} for a stage: each folder it reads (by its DONE digest; ``folders`` when already listed)
        and each local file the task reads."""
        folders = self.input_paths(k, name) if folders is None else folders
        out = {str(p.relative_to(self.run_dir)): stage_digest(p) for p in folders}
        out.update({f"file:{f}": file_hash(Path(f)) for f in self.task.source_files()})
        return out

    @property
    def prompt_format(self):
        """How every prompt of this run becomes the policy's input (selfimprove.core.prompts)."""
        return PromptFormat(
            chat=self.recipe.generate.chat_template, system=self.task.system_prompt, fewshot=self.task.fewshot_examples
        )

    def checkpoint(self, k: int) -> str:
        """The policy that round k trains into; round k generates from checkpoint(k - 1)."""
        while k >= 0 and self.rolled_back(k):  # a rolled-back round's policy is the one before it
            k -= 1
        if k < 0:
            return base_model_path(self.recipe, self.run_dir)
        return str(self.stage(k, "train") / "model")

    def rolled_back(self, k: int) -> bool:
        """Whether a 'rollback' alarm fired at round k (its checkpoint and data are then passed over)."""
        mon = self.stage(k, "monitor")
        return is_done(mon) and any(
            a["action"] == "rollback" for a in read_stage_json(mon / "alarms.json", self.run_dir)
        )

    def relative(self, path: str) -> str:
        """A path inside the run as 'round_00/train/model' (lineage survives moving the run); others unchanged."""
        p = Path(path)
        return str(p.relative_to(self.run_dir)) if p.is_relative_to(self.run_dir) else str(path)

    def history(self, upto: int) -> list[dict]:
        """Metrics of completed rounds before ``upto`` as decisions read them: no eval-scored key (core.decisions)."""
        return [
            decisions.readable(read_stage_json(self.stage(j, "monitor") / "metrics.json", self.run_dir))
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
        """Eval, dev and probe prompts (as core.prompts.prompt_key compares them): no training prompt may be one."""
        return {prompt_key(r["prompt"]) for r in self.eval_rows() + self.dev_rows() + self.probe_rows()}

    def probe_rows(self) -> list[dict]:
        path = self.run_dir / "probe_set" / "data"
        return load_rows(path) if path.exists() else []
