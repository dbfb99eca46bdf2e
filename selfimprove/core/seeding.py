"""Every random draw of a run comes from here: a generator per (seed, stream, round, ...).

Each draw's generator is ``SeedSequence(seed, spawn_key=(stream, round, *more))``: numpy hashes the entropy and the
spawn key together, so any two distinct tuples give statistically independent streams. Ad-hoc arithmetic
(``seed * 1000 + k``, ``seed + k``) does not: there seed 0's round 1 draws what seed 1's round 0 draws, which
correlates the seeds and arms of a study. Libraries that take a plain integer (torch, transformers, vLLM, a server's
per-request seed) get :func:`int_seed`, 31 bits drawn from the same sequence.

A new kind of draw gets a row in ``STREAMS``; the ids are never reused or renumbered (that would change old runs).
"""

from __future__ import annotations

import numpy as np

STREAMS: dict[str, tuple[int, str]] = {
    "seed_data": (1, "the task's labelled seed rows"),
    "eval_sets": (2, "the fixed ID/OOD eval problems"),
    "round_prompts": (3, "round k's prompts (and the generic task's prompt order)"),
    "train_mix": (4, "round k's training mixture draw"),
    "probe_set": (5, "which held-out prompts form the fixed probe set"),
    "init": (6, "a from-scratch model's initial weights"),
    "generate": (7, "round k's sampling (torch batches, vLLM, per-request server seeds)"),
    "probe_sampling": (8, "the probe set's samples, the same for every checkpoint"),
    "judge": (9, "round k's judging (pairwise pair choice, judge sampling)"),
    "select": (10, "round k's selection (k-means, QDIT ties, feature subsamples)"),
    "train": (11, "round k's trainer seed and data order (TrainingArguments.seed / data_seed)"),
    "label_noise": (12, "which seed labels a task corrupts on purpose (rewrite.label_noise)"),
    "dev_split": (13, "the dev problems decisions read (never the eval sets)"),
    "bootstrap_ci": (14, "resamples of compare's paired bootstrap (round 1: its paired permutations)"),
    "rules": (16, "the rewrite task's rule universe (held-out rules first)"),
    "oracle_labels": (17, "which selected rows get a corrupted reference (select.oracle_label_noise)"),
    "reward_pairs": (18, "the reward model's pairs, corruptions (judge.reward_model.train); round 1: trainer, 2: head"),
    "eft_data": (19, "round 0's judging rows for the policy and where they go (judge.llm.eft_share)"),
    "proposal_examples": (20, "the seed rows that teach a policy to propose problems (propose.mode task_native)"),
    "propose": (21, "round k's proposal requests, few-shot picks and proposer sampling"),
    "learnability": (22, "round k's policy samples that measure each proposal's pass rate"),
    "probe_draw": (23, "the probe's held-out problems (apart from the eval and dev sets; never eval answers)"),
    "held_out_parts": (24, "the rewrite task's held-out left and right sides (rewrite.held_out_parts)"),
    "misread": (25, "the rewrite task's misread rules and their wrong right sides (label_noise_kind systematic)"),
    "measure": (15, "fixed-size measurement subsamples (seed 0 always: a metric depends on the texts alone)"),
}


def sequence(seed: int, stream: str, round_: int = 0, *more: int) -> np.random.SeedSequence:
    if stream not in STREAMS:
        raise KeyError(f"unknown random stream {stream!r}; add it to selfimprove.core.seeding.STREAMS")
    return np.random.SeedSequence(int(seed), spawn_key=(STREAMS[stream][0], int(round_), *map(int, more)))


def rng(seed: int, stream: str, round_: int = 0, *more: int) -> np.random.Generator:
    """The generator for one draw; the same arguments always give the same numbers."""
    return np.random.default_rng(sequence(seed, stream, round_, *more))


def int_seed(seed: int, stream: str, round_: int = 0, *more: int) -> int:
    """A 31-bit integer seed for libraries that take one (torch.manual_seed, TrainingArguments, vLLM, servers)."""
    return int(sequence(seed, stream, round_, *more).generate_state(1, np.uint32)[0] >> 1)


def child_seed(seed: int, *key: int) -> int:
    """A 31-bit seed for part ``key`` of one draw (a batch, a request), from that draw's integer seed."""
    return int(np.random.SeedSequence(int(seed), spawn_key=tuple(map(int, key))).generate_state(1, np.uint32)[0] >> 1)
