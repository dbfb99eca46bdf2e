"""Tasks supply prompts, seed data, fixed eval sets and answer checking; the loop never looks inside a task's data.

Row conventions (plain dicts, saved as `datasets` columns):
  prompt rows:  prompt_id, prompt, difficulty, reference ("" when unknown; never trained on, only judged/measured)
  seed rows:    prompt_id, prompt, completion, difficulty
  eval rows:    prompt_id, prompt, reference, difficulty, split ("id" | "ood")
Round prompts also carry their lineage (``selfimprove.core.prompts.PROPOSAL_LINEAGE``) when the run proposes
prompts: the task's own get its defaults, the propose stage's get who wrote them, from which parent, by which
operation, and their pass rate under the policy.
``prompt`` is the user message; the generic task also keeps ``source_prompt``, the row's own text before its prompt
template, which decontamination compares (the template's fixed words are shared by every prompt).
"""

from __future__ import annotations

import abc
from typing import Protocol

import numpy as np

from selfimprove.core.prompts import prompt_key


class Task(abc.ABC):
    """What every task does (abstract methods) and what only some can (capabilities, declared as class flags and read
    by whoever needs them, never probed): ``corrupts`` (``corrupt``: a plausible wrong answer, for label-noise arms,
    reward-model pairs and EFT grading) and ``proposes`` (the ``Proposing`` methods, for propose.mode 'task_native')."""

    name: str
    Config: type  # the dataclass of the recipe's task.<name> section, defined in the task's module
    corrupts: bool = False
    proposes: bool = False
    system_prompt: str  # before every prompt ("" = none); selfimprove.core.prompts places it
    fewshot_examples: tuple  # (prompt, completion) pairs shown before every prompt

    @abc.abstractmethod
    def source_files(self) -> list[str]:
        """Local files the task reads (their hashes go into every stage's DONE record)."""

    def data_problems(self) -> list[str]:
        """Everything wrong with the data files the task's section names, all at once, each with its field; the
        built-in tasks make their data, so [] by default."""
        return []

    @abc.abstractmethod
    def alphabet(self) -> str:
        """Characters a from-scratch character tokenizer needs."""

    @abc.abstractmethod
    def seed_data(self, exclude: set[str] = frozenset()) -> list[dict]:
        """Labelled round-0 examples, none of whose prompts is in ``exclude`` (eval, dev and probe prompts)."""

    @abc.abstractmethod
    def eval_sets(self) -> list[dict]:
        """The fixed in- and out-of-distribution eval problems (made once per run). Their answers are only ever
        measured (eval/... metrics): no decision of the loop reads them."""

    @abc.abstractmethod
    def dev_sets(self, exclude: set[str]) -> list[dict]:
        """The dev split ([] for none), rows like the eval sets' but none in ``exclude``: the labelled held-out rows
        a decision (curriculum, alarm) may read."""

    @abc.abstractmethod
    def held_out(self, stream: str, size: int, exclude: set[str]) -> list[dict]:
        """About ``size`` held-out prompt rows per level, like the eval sets' but from the named random stream and none
        in ``exclude`` (the probe set is a subsample of them)."""

    @abc.abstractmethod
    def round_prompts(self, k: int, history: list[dict], exclude: set[str]) -> list[dict]:
        """Unlabelled prompts for round k >= 1; ``history`` holds earlier rounds' metrics, ``exclude`` eval prompts."""

    @abc.abstractmethod
    def answer(self, completion: str) -> str | None:
        """Canonical final answer of a completion, or None when it has none (used by majority vote)."""

    @abc.abstractmethod
    def is_correct(self, completion: str, reference: str) -> bool:
        """Ground-truth check (verifier judge, eval, pseudo-label accuracy)."""

    @abc.abstractmethod
    def format_ok(self, prompt: str, completion: str, finished: bool) -> bool:
        """Label-free format/length check."""

    @abc.abstractmethod
    def max_new_tokens(self, rows: list[dict]) -> int:
        """Enough new tokens for every prompt in ``rows``."""

    @abc.abstractmethod
    def eval_metrics(self, rows: list[dict]) -> dict:
        """Flat eval/... metrics from eval rows carrying a boolean ``correct``."""

    @classmethod
    def recipe_problems(cls, recipe) -> list[str]:
        """What is wrong with the whole recipe for this task (its section read with the others); [] by default."""
        return []

    @classmethod
    def pairs_prompts(cls, cfg) -> bool:
        """Whether the task poses equivalent prompts in groups (group_id), which the 'consistency' judge compares."""
        return False

    def corrupt(self, rng, answer: str) -> str:
        """A plausible wrong answer close to ``answer`` (tasks with ``corrupts``)."""
        raise NotImplementedError(f"task {self.name!r} cannot build a wrong answer (its class sets corrupts = False)")


class FixedSets:
    """eval_sets, dev_sets and held_out for a task that generates its problems: each set from its own named stream
    through the task's ``_fixed_set(stream, name, size, exclude)``, sized by the config fields ``EVAL_SIZE`` and
    ``DEV_SIZE`` (per level)."""

    EVAL_SIZE: str
    DEV_SIZE: str

    def eval_sets(self) -> list[dict]:
        return self._fixed_set("eval_sets", "eval", getattr(self.cfg, self.EVAL_SIZE), set())

    def dev_sets(self, exclude: set[str]) -> list[dict]:
        return self._fixed_set("dev_split", "dev", getattr(self.cfg, self.DEV_SIZE), exclude)

    def held_out(self, stream: str, size: int, exclude: set[str]) -> list[dict]:
        """``size`` problems per level like the eval sets, from ``stream``, none in ``exclude`` (the probe)."""
        return self._fixed_set(stream, "probe", size, exclude)


class Proposing(Protocol):
    """What a built-in task adds for propose.mode 'task_native': requests in its own format (``PROPOSE_MARK`` and a
    size, e.g. countdown's ``?3``), its own valid answer to one (the seed's examples, and the candidates when
    propose.model is 'task'), and the check of a proposal, which its solver makes the reference of."""

    PROPOSE_MARK: str

    def propose_requests(self, n: int, rng, k: int = 0, history: list[dict] = ()) -> list[str]:
        """n requests for round k (k = 0: the seed's range)."""

    def write_problem(self, request: str, rng) -> str:
        """A random valid problem answering ``request``."""

    def proposed_row(self, text: str) -> tuple[dict | None, str]:
        """The proposal as a round prompt row (its reference from the task's solver), or None and why not."""


def proposal_examples(task: Proposing, n: int, exclude: set[str], rng) -> list[dict]:
    """Seed rows that teach a policy to propose: a request -> the task's own valid problem for it, none an excluded
    (eval or dev) prompt."""
    rows = []
    for _ in range(100 * n):
        if len(rows) == n:
            break
        request = task.propose_requests(1, rng)[0]
        problem = task.write_problem(request, rng)
        if prompt_key(problem) in exclude:
            continue
        size = task.proposed_row(problem)[0]["difficulty"]
        rows.append({"prompt_id": f"propose-{len(rows)}", "prompt": request, "completion": problem, "difficulty": size})
    return rows


def split_accuracy(rows: list[dict]) -> dict:
    """eval/accuracy/<split>: mean accuracy over each split's rows; every task reports id and ood (0.0 when empty),
    and any other split its rows carry (rewrite's ood_parts)."""
    out = {}
    for split in dict.fromkeys(["id", "ood", *(r["split"] for r in rows)]):
        sel = [r["correct"] for r in rows if r["split"] == split]
        out[f"eval/accuracy/{split}"] = float(np.mean(sel)) if sel else 0.0
    return out


def oracle_correct(task, completion: str, reference: str) -> int:
    """Ground truth for measurement only: 1 correct, 0 wrong, -1 when there is no reference to check against."""
    return int(task.is_correct(completion, reference)) if reference else -1
