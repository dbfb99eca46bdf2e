"""Reversed-digit addition in the format of Lee et al. 2025 (arXiv 2502.01612).

Prompt ``a_rev+b_rev=``, completion ``sum_rev`` zero-padded on the right to max(len a, len b) + 1 digits, then EOS.
Example: 57 + 8 -> prompt "75+8=", completion "560" (65 reversed and padded to 3 digits). Eval problems of digit
count n have both operands n digits.

Difficulty (``difficulty``):
- 'longer' (Lee et al.): the longer operand's length. The seed covers lengths up to seed_max_digits, so the next
  difficulty needs positions the model never saw; tiny CPU models score exactly 0 there (see the README).
- 'shorter': the shorter operand's length. The seed covers every position (the longer operand up to
  long_max_digits) but only problems whose shorter operand has <= seed_max_digits digits. The next difficulty is new
  only in how the digits combine, which a tiny model partly solves: the signal self-labelling needs.

Proposing (propose.mode 'task_native'): ``?4`` asks for a problem of difficulty 4, sizes drawn from the round's
target digit counts; the reference of a well-formed proposal is its true sum, so a label-free run filters
proposals with propose.learnability 'agreement'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from selfimprove.core import seeding
from selfimprove.core.prompts import prompt_key
from selfimprove.core.typed_yaml import option
from selfimprove.tasks import FixedSets, Task, split_accuracy


@dataclass
class AdditionConfig:
    """Options of the addition task."""

    seed_min_digits: int = option(1, "Shortest operand in the labelled seed data.", ge=1)
    seed_max_digits: int = option(6, "Longest operand in the labelled seed data (the starting difficulty).", ge=1)
    difficulty: Literal["longer", "shorter"] = option(
        "longer",
        "Which operand's digit count is a problem's difficulty. 'longer' is Lee et al.'s setting; 'shorter' seeds "
        "every position (the longer operand up to long_max_digits) and grows the digits both operands share.",
    )
    long_max_digits: int = option(
        0,
        "With difficulty 'shorter': the longer operand's digit range in seed and round prompts (0 = seed_max_digits).",
        ge=0,
    )
    seed_size: int = option(20000, "Number of labelled seed examples (operand lengths drawn independently).", ge=1)
    prompts_per_round: int = option(2000, "Unlabelled prompts at the new difficulty generated each round.", ge=1)
    in_range_prompts: int = option(0, "Extra unlabelled prompts per round inside the seeded (labelled) range.", ge=0)
    swapped_pairs: bool = option(
        False,
        "Pose every new-difficulty problem twice, a+b and b+a (prompts_per_round counts prompts), as one group_id, so "
        "the 'consistency' judge can ask both orders to agree: a label-free check that catches errors a majority vote "
        "keeps.",
    )
    curriculum: Literal["next", "accelerated"] = option(
        "next",
        "'next': round k adds digit count seed_max_digits+k; 'accelerated': also skips every count the last round's "
        "dev set solved at >= accelerate_threshold (never the eval sets).",
    )
    dev_size_per_digit: int = option(
        0,
        "Dev problems per digit count (a split of their own, drawn apart from the eval sets and kept out of training): "
        "what decisions such as the accelerated curriculum read. 0 = none.",
        ge=0,
    )
    accelerate_threshold: float = option(
        0.99, "Accuracy at which a digit count counts as solved for the accelerated curriculum.", gt=0, le=1
    )
    other_operand: Literal["same", "any"] = option(
        "any",
        "Difficulty 'longer' only: at digit count n, 'same' makes both operands n digits; 'any' draws the other "
        "operand's length from 1..n.",
    )
    eval_max_digits: int = option(12, "Evaluate digit counts 1..eval_max_digits (both operands of that length).", ge=1)
    pad_width: int = option(
        0,
        "Zero-pad both operands to this many digits (the answer to pad_width + 1) before reversing, so every answer "
        "digit is the same distance from its operand digits in every problem: with RoPE a tiny model then carries the "
        "rule to digit counts it never saw. 0 = Lee et al.'s variable width.",
        ge=0,
    )
    eval_size_per_digit: int = option(200, "Eval problems per digit count.", ge=1)

    def check(self) -> list[str]:
        p = []
        if not 1 <= self.seed_min_digits <= self.seed_max_digits:
            p.append(
                f"seed_min_digits={self.seed_min_digits} must be >= 1 and <= seed_max_digits={self.seed_max_digits}."
            )
        if self.difficulty == "shorter" and self.long_max_digits < self.eval_max_digits:
            p.append(
                f"difficulty 'shorter' needs long_max_digits >= eval_max_digits={self.eval_max_digits} (got "
                f"{self.long_max_digits}): "
                "no position may be unseen. Raise long_max_digits."
            )
        if self.pad_width and self.pad_width < max(self.eval_max_digits, self.long_max_digits):
            p.append(
                f"pad_width={self.pad_width} is shorter than the longest operand evaluated or generated "
                f"({max(self.eval_max_digits, self.long_max_digits)} digits). Raise pad_width or lower eval_max_digits."
            )
        if self.curriculum == "accelerated" and not self.dev_size_per_digit:
            p.append(
                "curriculum 'accelerated' decides from accuracy, which it reads from the dev split, never the eval "
                "sets: set dev_size_per_digit > 0 (e.g. 100)."
            )
        if self.eval_max_digits <= self.seed_max_digits:
            p.append(
                f"eval_max_digits={self.eval_max_digits} leaves no out-of-distribution digit count; set it above "
                f"seed_max_digits={self.seed_max_digits}."
            )
        return p


_PROMPT = re.compile(r"^(\d+)\+(\d+)=$")


def format_problem(a: int, b: int, pad_width: int = 0) -> tuple[str, str]:
    """Lee et al.'s format: operands and answer least significant digit first, the answer zero-padded to the longer
    operand's length + 1. With ``pad_width`` both operands are zero-padded to that many digits first (the answer to
    pad_width + 1), so each answer digit sits at the same distance from its two operand digits in every problem."""
    ra, rb = str(a)[::-1].ljust(pad_width, "0"), str(b)[::-1].ljust(pad_width, "0")
    return f"{ra}+{rb}=", str(a + b)[::-1].ljust(max(len(ra), len(rb)) + 1, "0")


def expected_length(prompt: str) -> int | None:
    m = _PROMPT.match(prompt)
    return None if m is None else max(len(m.group(1)), len(m.group(2))) + 1


def _operand(rng: np.random.Generator, digits: int) -> int:
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return int(rng.integers(low, 10**digits))


class AdditionTask(FixedSets, Task):
    EVAL_SIZE, DEV_SIZE = "eval_size_per_digit", "dev_size_per_digit"
    name = "addition"
    Config = AdditionConfig
    corrupts = proposes = True
    system_prompt = ""
    fewshot_examples = ()
    PROPOSE_MARK = "?"

    @classmethod
    def recipe_problems(cls, recipe) -> list[str]:
        add, rounds = recipe.task.addition, recipe.rounds
        reach = add.seed_max_digits + rounds  # the curriculum 'next' adds a digit count a round
        wide = add.difficulty == "longer" and add.prompts_per_round and add.curriculum == "next"
        if add.pad_width and wide and reach > add.pad_width:
            return [
                f"task.addition.pad_width={add.pad_width}: round {rounds} generates {reach}-digit operands, wider "
                "than the padding. Raise pad_width or lower rounds."
            ]
        return []

    @classmethod
    def pairs_prompts(cls, cfg) -> bool:
        return cfg.swapped_pairs

    def source_files(self) -> list[str]:
        return []  # every problem is generated from the seed

    def __init__(self, cfg: AdditionConfig, seed: int):
        self.cfg, self.seed = cfg, seed

    def alphabet(self) -> str:
        return "0123456789+="

    def _problem(self, rng, la: int, lb: int) -> dict:
        a, b = _operand(rng, la), _operand(rng, lb)
        prompt, completion = format_problem(a, b, self.cfg.pad_width)
        return {"prompt": prompt, "completion": completion, "difficulty": self._difficulty(la, lb)}

    def _difficulty(self, la: int, lb: int) -> int:
        return min(la, lb) if self.cfg.difficulty == "shorter" else max(la, lb)

    def _lengths(self, rng, low: int, high: int) -> tuple[int, int]:
        """Operand lengths whose difficulty lies in [low, high], in random order."""
        c = self.cfg
        if c.difficulty == "shorter":
            short = int(rng.integers(low, high + 1))
            other = int(rng.integers(short, (c.long_max_digits or c.seed_max_digits) + 1))
        else:
            short = int(rng.integers(low, high + 1))
            other = short if c.other_operand == "same" else int(rng.integers(1, short + 1))
        return (short, other) if rng.random() < 0.5 else (other, short)

    def _fixed_set(self, stream: str, name: str, size: int, exclude: set[str]) -> list[dict]:
        """Each digit count from its own sub-stream, so a set never depends on the other counts drawn."""
        rows = []
        if not size:
            return rows
        for n in range(1, self.cfg.eval_max_digits + 1):
            rng, space = seeding.rng(self.seed, stream, 0, n), (10 if n == 1 else 9 * 10 ** (n - 1)) ** 2
            # Eval takes at most half of a tiny problem space, dev and probe an eighth each: training sees the rest.
            want, seen = min(size, space // 2 if name == "eval" else space // 8), set()
            for _ in range(100 * want):
                if len(seen) == want:
                    break
                p = self._problem(rng, n, n)
                if p["prompt"] in seen or prompt_key(p["prompt"]) in exclude:
                    continue
                seen.add(p["prompt"])
                split = "id" if self.cfg.seed_min_digits <= n <= self.cfg.seed_max_digits else "ood"
                rows.append(
                    {
                        "prompt_id": f"{name}-d{n}-{len(seen) - 1}",
                        "prompt": p["prompt"],
                        "reference": p["completion"],
                        "difficulty": n,
                        "split": split,
                    }
                )
        return rows

    def seed_data(self, exclude: set[str] = frozenset()) -> list[dict]:
        rng, rows, c = seeding.rng(self.seed, "seed_data"), [], self.cfg
        while len(rows) < c.seed_size:
            if c.difficulty == "shorter":
                la, lb = self._lengths(rng, c.seed_min_digits, c.seed_max_digits)
            else:  # Lee et al.: both lengths drawn independently
                la, lb = (int(x) for x in rng.integers(c.seed_min_digits, c.seed_max_digits + 1, size=2))
            p = self._problem(rng, la, lb)
            if prompt_key(p["prompt"]) not in exclude:
                rows.append({"prompt_id": f"seed-{len(rows)}", **p})
        return rows

    def target_digits(self, k: int, history: list[dict]) -> list[int]:
        """Digit counts that round k self-labels: the next one, plus (accelerated) every count already solved."""
        last = (
            self.cfg.seed_max_digits + k - 1
            if not history
            else history[-1].get("task/max_difficulty", self.cfg.seed_max_digits)
        )
        top = last + 1
        if self.cfg.curriculum == "accelerated" and history:
            solved = [
                int(key.rsplit("d", 1)[1])
                for key, v in history[-1].items()  # the dev split, never eval/
                if key.startswith("dev/accuracy/d") and v >= self.cfg.accelerate_threshold
            ]
            top = max(top, max(solved, default=0) + 1)
        if self.cfg.pad_width:  # the accelerated curriculum stops at the padded width
            last, top = min(last, self.cfg.pad_width - 1), min(top, self.cfg.pad_width)
        return list(range(last + 1, top + 1))

    def round_prompts(self, k: int, history: list[dict], exclude: set[str]) -> list[dict]:
        rng, c, rows = seeding.rng(self.seed, "round_prompts", k), self.cfg, []
        targets = self.target_digits(k, history)
        low_range = (
            c.seed_min_digits,
            c.seed_max_digits,
        )  # "in range" = the labelled seed's range, not the moving target
        plan = [("new", c.prompts_per_round), ("in_range", c.in_range_prompts)]
        for kind, count in plan:
            made = 0
            while made < count:
                n = int(rng.choice(targets))
                la, lb = self._lengths(rng, n, n) if kind == "new" else self._lengths(rng, *low_range)
                a, b = _operand(rng, la), _operand(rng, lb)
                pairs = kind == "new" and c.swapped_pairs and count - made >= 2
                orders = [(a, b), (b, a)] if pairs else [(a, b)]
                texts = [format_problem(x, y, c.pad_width) for x, y in orders]
                if any(prompt_key(t[0]) in exclude for t in texts) or (pairs and a == b):
                    continue
                group = f"r{k}-{len(rows)}"
                for prompt, completion in texts:
                    rows.append(
                        {
                            "prompt_id": f"r{k}-{len(rows)}",
                            "group_id": group,
                            "prompt": prompt,
                            "difficulty": self._difficulty(la, lb),
                            "reference": completion,
                        }
                    )
                made += len(texts)
        return rows

    def propose_requests(self, n: int, rng, k: int = 0, history: list[dict] = ()) -> list[str]:
        """'?D': a problem of difficulty D, D drawn from round k's target digit counts (k = 0: the seed's range)."""
        c = self.cfg
        sizes = self.target_digits(k, list(history)) if k else list(range(c.seed_min_digits, c.seed_max_digits + 1))
        return [f"{self.PROPOSE_MARK}{int(rng.choice(sizes))}" for _ in range(n)]

    def write_problem(self, request: str, rng) -> str:
        n = int(request[len(self.PROPOSE_MARK) :])
        return self._problem(rng, *self._lengths(rng, n, n))["prompt"]

    def proposed_row(self, text: str) -> tuple[dict | None, str]:
        """A proposal in the task's own format (reversed operands, zero-padded as pad_width says) as a prompt row
        whose reference is the true sum, or None and why not."""
        m = _PROMPT.match(text.strip())
        if m is None:
            return None, "malformed"
        a, b = (int(x[::-1]) for x in m.groups())
        prompt, reference = format_problem(a, b, self.cfg.pad_width)
        if prompt != text.strip():  # a leading zero, or padding other than the task's
            return None, "malformed"
        la, lb = len(str(a)), len(str(b))
        if max(la, lb) > self.cfg.eval_max_digits:
            return None, "size"
        return {"prompt": prompt, "difficulty": self._difficulty(la, lb), "reference": reference}, ""

    def corrupt(self, rng, answer: str) -> str:
        """One digit changed: a wrong label of the same length (select.oracle_label_noise)."""
        i = int(rng.integers(0, len(answer)))
        return answer[:i] + str(rng.choice([d for d in "0123456789" if d != answer[i]])) + answer[i + 1 :]

    def answer(self, completion: str) -> str | None:
        return completion if completion.isdigit() else None

    def is_correct(self, completion: str, reference: str) -> bool:
        return completion == reference

    def format_ok(self, prompt: str, completion: str, finished: bool) -> bool:
        """Lee et al.'s length filter: exactly max operand length + 1 digits, then EOS. Needs no ground truth."""
        return finished and completion.isdigit() and len(completion) == expected_length(prompt)

    def max_new_tokens(self, rows: list[dict]) -> int:
        return max(expected_length(r["prompt"]) or 0 for r in rows) + 2

    def eval_metrics(self, rows: list[dict]) -> dict:
        out = split_accuracy(rows)
        per_digit = {}
        for n in sorted({r["difficulty"] for r in rows}):
            per_digit[n] = float(np.mean([r["correct"] for r in rows if r["difficulty"] == n]))
            out[f"eval/accuracy/d{n}"] = per_digit[n]
        frontier = 0
        while per_digit.get(frontier + 1, 0.0) >= 0.9:
            frontier += 1
        out["eval/frontier"] = frontier
        return out
