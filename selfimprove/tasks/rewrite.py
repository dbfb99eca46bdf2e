"""String rewriting (after Zhang, Wang & Charton 2024, arXiv 2402.10891): a task where diversity out of
distribution is measurable, because OOD means *rules never seen in training*.

Prompt ``ab>ba;c>|cabca=``: one or more rules ``x>y`` (``;``-separated) and an input string; each rule in turn
replaces the leftmost occurrence of ``x`` in the current string by ``y`` (``y`` may be empty: a deletion), and a rule
whose ``x`` does not occur changes nothing (a no-op, a decision the model must make). The answer is the final string:
``cabca`` -> ``cbaca`` -> ``baca``. The verifier compares exactly.

Why this family: one rule type (leftmost replacement) keeps a rule a single, checkable object, so "distinct rules"
is a clean diversity count; composing ``steps`` rules gives complexity without a new rule type; a no-op share makes
reading the rule necessary (copying the input is not a solution).

Rules: for a seed, a fixed universe is drawn once. The first ``ood_rules`` are held out (OOD eval only), the next
``train_rules`` are the training rules; arms of a study that vary ``train_rules`` share the held-out rules and
their training rules are nested. With ``held_out_parts`` > 0, that many left sides and right sides are set aside
first: no rule of the universe uses one, and the rules made only of them form the 'ood_parts' eval split, held-out
rules whose parts no arm has seen either (with 128 training rules, most 'ood' rules are new combinations of seen
parts). Knobs, each a field: ``train_rules`` at a fixed ``seed_size`` (diversity), ``label_noise`` and
``label_noise_kind`` (quality: random wrong labels, or some rules misread the same way every time),
``step_mix`` and ``rule_max_len`` (complexity). Difficulty = steps; a row's ``attribute`` is its first rule
(per-rule quotas).

Proposing (propose.mode 'task_native'): ``?2`` asks for a problem of 2 rules. A proposal may invent rules, never
one of the held-out ones or one using a held-out part; its reference is its rules applied to its input.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from selfimprove.core import seeding
from selfimprove.core.prompts import prompt_key
from selfimprove.core.typed_yaml import option
from selfimprove.tasks import FixedSets, Task, split_accuracy


@dataclass
class RewriteConfig:
    """Options of the rewrite task (string rewriting rules; OOD = unseen rules)."""

    alphabet: int = option(6, "Letters a.. used in rules and strings.", ge=2, le=26)
    train_rules: int = option(
        64, "Distinct rules in the seed data and round prompts (the diversity knob, at a fixed seed_size).", ge=1
    )
    ood_rules: int = option(
        64, "Held-out rules, only in the OOD eval (the same for every train_rules under one seed).", ge=1
    )
    rule_max_len: int = option(2, "Longest left or right side of a rule (complexity).", ge=1)
    min_input: int = option(3, "Shortest input string.", ge=0)
    max_input: int = option(8, "Longest input string.", ge=1)
    noop_share: float = option(
        0.2, "Share of problems whose first rule does not apply (the answer keeps that step's string).", ge=0, le=1
    )
    step_mix: list[float] = option(
        [1.0], "Weights of 1, 2, ... rules per problem in seed data and round prompts (complexity), e.g. [1, 1, 1]."
    )
    label_noise: float = option(
        0.0, "Share of seed labels made wrong on purpose, as label_noise_kind says (the quality knob).", ge=0, le=1
    )
    label_noise_kind: Literal["random", "systematic"] = option(
        "random",
        "random: that share of seed rows, drawn at random, get one character of their label changed. systematic: "
        "some training rules are misread, always the same way (a fixed wrong right side), in every seed label "
        "where they apply; as many rules as make the expected share of wrong labels label_noise with one-rule "
        "problems (train_rules x label_noise / (1 - noop_share), rounded).",
    )
    held_out_parts: int = option(
        0,
        "Left sides and right sides (each this many) that no training or 'ood' rule uses; every rule made only of "
        "them is in the 'ood_parts' eval split (held-out rules whose parts are unseen too). 0 = no such split.",
        ge=0,
    )
    seed_size: int = option(4000, "Labelled seed problems (the example budget).", ge=1)
    prompts_per_round: int = option(1000, "Unlabelled round prompts: new inputs for the training rules.", ge=1)
    eval_max_steps: int = option(
        3, "Evaluate 1..eval_max_steps rules per problem, on training (ID) and held-out (OOD) rules.", ge=1
    )
    eval_size_per_level: int = option(200, "Eval problems per split and step count.", ge=1)
    eval_id_rules: int = option(
        0,
        "Training rules the ID eval (and dev, probe) problems are drawn from: the first this many (0 = all). A study "
        "whose arms vary train_rules sets it to its smallest arm's count, so every arm of a seed gets the same tests.",
        ge=0,
    )
    dev_size_per_level: int = option(
        0,
        "Dev problems per split and step count (apart from the eval sets, kept out of training): labelled rows a "
        "decision may read (dev/... metrics). 0 = none.",
        ge=0,
    )

    def check(self) -> list[str]:
        p = []
        if self.min_input > self.max_input:
            p.append(f"min_input={self.min_input} must be <= max_input={self.max_input}.")
        if self.label_noise_kind == "systematic" and self.misread_count() > self.train_rules:
            p.append(
                f"label_noise={self.label_noise} with noop_share={self.noop_share} asks for {self.misread_count()} "
                f"misread rules of train_rules={self.train_rules}: lower label_noise or raise noop_share."
            )
        if self.eval_id_rules > self.train_rules:
            p.append(
                f"eval_id_rules={self.eval_id_rules} must be <= train_rules={self.train_rules}: ID problems use the "
                "first eval_id_rules training rules."
            )
        if (
            not self.step_mix
            or any(not isinstance(w, (int, float)) or w < 0 for w in self.step_mix)
            or not sum(self.step_mix)
        ):
            p.append(
                f"step_mix={self.step_mix!r} must be a list of non-negative weights with a positive sum, e.g. [1, 1]."
            )
        lefts = sum(self.alphabet**n for n in range(1, self.rule_max_len + 1))  # right sides: lefts + 1 (empty)
        if self.held_out_parts >= lefts // 2:
            p.append(
                f"held_out_parts={self.held_out_parts} must be under half of the {lefts} possible left sides: lower "
                "it, or raise alphabet or rule_max_len."
            )
        space = (lefts - self.held_out_parts) * (lefts + 1 - self.held_out_parts)
        if self.train_rules + self.ood_rules > space // 2:
            p.append(
                f"train_rules + ood_rules = {self.train_rules + self.ood_rules} is over half of the {space} possible "
                "rules: raise alphabet or rule_max_len, or ask for fewer rules."
            )
        return p

    def misread_count(self) -> int:
        applies = 1.0 - self.noop_share
        return round(self.train_rules * self.label_noise / applies) if applies else self.train_rules + 1


_PROMPT = re.compile(r"^((?:[a-z]+>[a-z]*)(?:;[a-z]+>[a-z]*)*)\|([a-z]*)=$")


def apply_rules(rules: list[tuple[str, str]], text: str) -> str:
    """Each rule in turn rewrites the leftmost occurrence of its left side (or nothing when it does not occur)."""
    for x, y in rules:
        text = text.replace(x, y, 1)
    return text


def parse_prompt(prompt: str) -> tuple[list[tuple[str, str]], str] | None:
    m = _PROMPT.match(prompt)
    if m is None:
        return None
    return [tuple(r.split(">")) for r in m.group(1).split(";")], m.group(2)


def render(rules: list[tuple[str, str]], text: str) -> str:
    return ";".join(f"{x}>{y}" for x, y in rules) + f"|{text}="


class RewriteTask(FixedSets, Task):
    EVAL_SIZE, DEV_SIZE = "eval_size_per_level", "dev_size_per_level"
    name = "rewrite"
    Config = RewriteConfig
    corrupts = proposes = True
    system_prompt = ""
    fewshot_examples = ()
    PROPOSE_MARK = "?"

    def __init__(self, cfg: RewriteConfig, seed: int):
        self.cfg, self.seed = cfg, seed
        self.letters = "abcdefghijklmnopqrstuvwxyz"[: cfg.alphabet]
        self.parts_lefts, self.parts_rights = self._held_out_parts()
        universe = self._universe()
        self.ood, self.train = universe[: cfg.ood_rules], universe[cfg.ood_rules : cfg.ood_rules + cfg.train_rules]
        self.ood_parts = [
            (x, y) for x in sorted(self.parts_lefts) for y in sorted(self.parts_rights) if x != y
        ]  # every rule made of held-out parts only
        self.misread = self._misread() if cfg.label_noise_kind == "systematic" else {}

    def source_files(self) -> list[str]:
        return []  # every problem is generated from the seed

    def alphabet(self) -> str:
        return self.letters + ">;|="

    def _sides(self, lo: int) -> list[str]:
        """Every string of lo..rule_max_len letters, shortest first."""
        return [
            "".join(t) for n in range(lo, self.cfg.rule_max_len + 1) for t in itertools.product(self.letters, repeat=n)
        ]

    def _held_out_parts(self) -> tuple[set[str], set[str]]:
        """held_out_parts left sides and as many non-empty right sides, from their own stream (deletions stay)."""
        n = self.cfg.held_out_parts
        if not n:
            return set(), set()
        rng, sides = seeding.rng(self.seed, "held_out_parts"), self._sides(1)
        return {str(v) for v in rng.choice(sides, n, replace=False)}, {
            str(v) for v in rng.choice(sides, n, replace=False)
        }

    def _universe(self) -> list[tuple[str, str]]:
        """Distinct rules, drawn once per seed in a fixed order (held-out first); none uses a held-out part."""
        c, rng = self.cfg, seeding.rng(self.seed, "rules")
        need, out, seen = c.ood_rules + c.train_rules, [], set()
        for _ in range(1000 * need):
            if len(out) == need:
                break
            x = "".join(rng.choice(list(self.letters), int(rng.integers(1, c.rule_max_len + 1))))
            y = "".join(rng.choice(list(self.letters), int(rng.integers(0, c.rule_max_len + 1))))
            if x != y and (x, y) not in seen and x not in self.parts_lefts and y not in self.parts_rights:
                seen.add((x, y))
                out.append((x, y))
        return out

    def _misread(self) -> dict[tuple[str, str], tuple[str, str]]:
        """Systematic label noise: misread_count training rules, each always read with one fixed wrong right side."""
        rng, sides = seeding.rng(self.seed, "misread"), self._sides(0)
        picked = rng.choice(len(self.train), self.cfg.misread_count(), replace=False)
        out = {}
        for i in sorted(int(i) for i in picked):
            x, y = self.train[i]
            wrong = [s for s in sides if s not in (x, y)]
            out[(x, y)] = (x, str(rng.choice(wrong)))
        return out

    def _steps(self, rng) -> int:
        w = np.asarray(self.cfg.step_mix, dtype=float)
        return int(rng.choice(len(w), p=w / w.sum())) + 1

    def _text(self, rng, n: int) -> str:
        return "".join(rng.choice(list(self.letters), n))

    def _problem(self, rng, pool: list[tuple[str, str]], steps: int) -> dict:
        c = self.cfg
        picks = [pool[i] for i in rng.integers(0, len(pool), steps)]
        n, x = int(rng.integers(c.min_input, c.max_input + 1)), picks[0][0]
        if rng.random() < c.noop_share:  # the first rule must not apply
            for _ in range(20):
                text = self._text(rng, n)
                if x not in text:
                    break
        else:  # the first rule applies: its left side inserted into a random string (the rest apply as they may)
            base = self._text(rng, max(0, n - len(x)))
            at = int(rng.integers(0, len(base) + 1))
            text = base[:at] + x + base[at:]
        return {
            "prompt": render(picks, text),
            "completion": apply_rules(picks, text),
            "difficulty": steps,
            "attribute": f"{x}>{picks[0][1]}",
        }

    def corrupt(self, rng, answer: str) -> str:
        """One character changed (or one added to an empty answer): a wrong label of the same shape."""
        if not answer:
            return str(rng.choice(list(self.letters)))
        i = int(rng.integers(0, len(answer)))
        other = [ch for ch in self.letters if ch != answer[i]]
        return answer[:i] + str(rng.choice(other)) + answer[i + 1 :]

    def _fixed_set(self, stream: str, name: str, size: int, exclude: set[str]) -> list[dict]:
        """Each (split, step count) from its own sub-stream, and ID problems on the first eval_id_rules training
        rules only, so arms of one seed that differ in train_rules (down to eval_id_rules) get the same tests."""
        rows, c = [], self.cfg
        id_pool = self.train[: c.eval_id_rules] if c.eval_id_rules else self.train
        splits = [("id", id_pool), ("ood", self.ood)] + ([("ood_parts", self.ood_parts)] if self.ood_parts else [])
        for s, (split, pool) in enumerate(splits):
            for steps in range(1, c.eval_max_steps + 1):
                rng, made = seeding.rng(self.seed, stream, 0, s, steps), 0
                for _ in range(100 * size):
                    if made == size:
                        break
                    p = self._problem(rng, pool, steps)
                    if prompt_key(p["prompt"]) in exclude:
                        continue
                    rows.append(
                        {
                            "prompt_id": f"{name}-{split}-s{steps}-{made}",
                            "prompt": p["prompt"],
                            "reference": p["completion"],
                            "difficulty": steps,
                            "split": split,
                            "attribute": p["attribute"],
                        }
                    )
                    made += 1
        return rows

    def seed_data(self, exclude: set[str] = frozenset()) -> list[dict]:
        rng, noise, rows = seeding.rng(self.seed, "seed_data"), seeding.rng(self.seed, "label_noise"), []
        for _ in range(100 * self.cfg.seed_size):
            if len(rows) == self.cfg.seed_size:
                break
            p = self._problem(rng, self.train, self._steps(rng))
            if prompt_key(p["prompt"]) in exclude:
                continue
            label = self._label(noise, p)
            rows.append(
                {"prompt_id": f"seed-{len(rows)}", **p, "label_noisy": label != p["completion"], "completion": label}
            )
        return rows

    def _label(self, noise, p: dict) -> str:
        """The seed label: the true answer, or a wrong one as label_noise and label_noise_kind say."""
        if self.cfg.label_noise_kind == "systematic":
            rules, text = parse_prompt(p["prompt"])
            return apply_rules([self.misread.get(r, r) for r in rules], text)
        return self.corrupt(noise, p["completion"]) if noise.random() < self.cfg.label_noise else p["completion"]

    def round_prompts(self, k: int, history: list[dict], exclude: set[str]) -> list[dict]:
        rng, rows = seeding.rng(self.seed, "round_prompts", k), []
        for _ in range(100 * max(1, self.cfg.prompts_per_round)):
            if len(rows) == self.cfg.prompts_per_round:
                break
            p = self._problem(rng, self.train, self._steps(rng))  # new inputs for the training rules
            # an empty answer reads as "no reference" to the verifier judge: such prompts are not posed in rounds
            if prompt_key(p["prompt"]) in exclude or not p["completion"]:
                continue
            rows.append(
                {
                    "prompt_id": f"r{k}-{len(rows)}",
                    "prompt": p["prompt"],
                    "difficulty": p["difficulty"],
                    "attribute": p["attribute"],
                    "reference": p["completion"],
                }
            )
        return rows

    def propose_requests(self, n: int, rng, k: int = 0, history: list[dict] = ()) -> list[str]:
        """'?S': a problem of S rules, S drawn from step_mix as training problems'."""
        return [f"{self.PROPOSE_MARK}{self._steps(rng)}" for _ in range(n)]

    def write_problem(self, request: str, rng) -> str:
        steps = int(request[len(self.PROPOSE_MARK) :])
        for _ in range(100):  # a round never poses an empty answer
            p = self._problem(rng, self.train, steps)
            if p["completion"]:
                break
        return p["prompt"]

    def proposed_row(self, text: str) -> tuple[dict | None, str]:
        """A proposal as a prompt row, its reference from applying its rules, or None and why not. Its rules may be
        new ones (the proposer widening the rule set is the diversity this task measures), but never a held-out
        one: those are the OOD eval's."""
        parsed, c = parse_prompt(text.strip()), self.cfg
        if parsed is None:
            return None, "malformed"
        rules, source = parsed
        if set("".join(x + y for x, y in rules) + source) - set(self.letters):
            return None, "letters"
        if len(rules) > c.eval_max_steps or not c.min_input <= len(source) <= c.max_input:
            return None, "size"
        if any(x == y or len(x) > c.rule_max_len or len(y) > c.rule_max_len for x, y in rules):
            return None, "rule"
        if set(rules) & set(self.ood) or any(x in self.parts_lefts or y in self.parts_rights for x, y in rules):
            return None, "held_out"
        answer = apply_rules(rules, source)
        if not answer:
            return None, "empty_answer"
        x, y = rules[0]
        return {"prompt": text.strip(), "difficulty": len(rules), "reference": answer, "attribute": f"{x}>{y}"}, ""

    def answer(self, completion: str) -> str | None:
        return completion if re.fullmatch(f"[{self.letters}]*", completion) else None

    def is_correct(self, completion: str, reference: str) -> bool:
        return completion == reference

    def format_ok(self, prompt: str, completion: str, finished: bool) -> bool:
        return finished and parse_prompt(prompt) is not None and self.answer(completion) is not None

    def max_new_tokens(self, rows: list[dict]) -> int:
        # a rewrite grows the string by at most rule_max_len - 1 per step
        return max(len(r["prompt"]) for r in rows) + self.cfg.eval_max_steps * self.cfg.rule_max_len + 2

    def eval_metrics(self, rows: list[dict]) -> dict:
        out = split_accuracy(rows)
        for split in dict.fromkeys(r["split"] for r in rows):
            for s in sorted({r["difficulty"] for r in rows if r["split"] == split}):
                sel = [r["correct"] for r in rows if r["split"] == split and r["difficulty"] == s]
                out[f"eval/accuracy/{split}_s{s}"] = float(np.mean(sel))
        return out
