"""Rule judges: the task's programmatic verifier, label-free majority vote and cross-prompt consistency, the
task's format/length rule, and a random score for control arms."""

from __future__ import annotations

import zlib
from collections import Counter, defaultdict

import numpy as np

from selfimprove.core.errors import DataError


def verifier(env, rows: list[dict]) -> list[float]:
    """1 if the completion matches the reference answer (needs ground truth)."""
    missing = [r["prompt_id"] for r in rows if not r["reference"]]
    if missing:
        raise DataError(
            f"judge 'verifier' needs a reference answer, but {len(missing)} prompts have none "
            f"(first: {missing[0]}). Use a label-free judge (majority, format) for unlabelled prompts."
        )
    return [float(env.task.is_correct(r["completion"], r["reference"])) for r in rows]


def majority(env, rows: list[dict]) -> list[float]:
    """Label-free: the share of the prompt's samples that give this sample's answer (0 for no answer)."""
    answers = [env.task.answer(r["completion"]) for r in rows]
    votes: dict[str, Counter] = defaultdict(Counter)
    totals: Counter = Counter()
    for r, a in zip(rows, answers):
        totals[r["prompt_id"]] += 1
        if a is not None:
            votes[r["prompt_id"]][a] += 1
    return [0.0 if a is None else votes[r["prompt_id"]][a] / totals[r["prompt_id"]] for r, a in zip(rows, answers)]


def consistency(env, rows: list[dict]) -> list[float]:
    """Label-free: the share of samples of this prompt's *equivalent* prompts (same ``group_id``, e.g. a+b and b+a)
    that give this sample's answer. A model that is consistently wrong on one phrasing is rarely wrong the same way on
    another, so this catches errors a majority vote keeps. A prompt with no equivalent falls back to its own vote."""
    answers = [env.task.answer(r["completion"]) for r in rows]
    groups = [r.get("group_id") or r["prompt_id"] for r in rows]
    votes: dict[str, Counter] = defaultdict(Counter)  # prompt -> answer counts
    totals: Counter = Counter()
    members: dict[str, set] = defaultdict(set)  # group -> its prompts
    for r, g, a in zip(rows, groups, answers):
        members[g].add(r["prompt_id"])
        totals[r["prompt_id"]] += 1
        if a is not None:
            votes[r["prompt_id"]][a] += 1
    out = []
    for r, g, a in zip(rows, groups, answers):
        others = [pid for pid in members[g] if pid != r["prompt_id"]] or [r["prompt_id"]]
        out.append(0.0 if a is None else sum(votes[p][a] for p in others) / sum(totals[p] for p in others))
    return out


def format_check(env, rows: list[dict]) -> list[float]:
    """Label-free: the task's format/length rule (for addition, Lee et al.'s length filter)."""
    return [float(env.task.format_ok(r["prompt"], r["completion"], r["finished"])) for r in rows]


def random_scores(env, rows: list[dict]) -> list[float]:
    """A control, not a judge: a uniform random score per sample, so best-vs-worst pairs and top-scoring picks are
    chosen at random. A matched control for a judge: the same data, pairs and steps without its quality signal (e.g.
    random-pair DPO against self-judged DPO). Each sample's draw is keyed by the round's judge seed, its prompt and
    its sample index, so it does not depend on how the round is sharded over ranks."""
    return [
        float(np.random.default_rng((env.seed, zlib.crc32(r["prompt_id"].encode()), r["sample_idx"])).random())
        for r in rows
    ]
