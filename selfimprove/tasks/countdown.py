"""Countdown-like expressions: an open-solution task where diversity is measurable and collapse can happen.

Prompt ``3,5,7>22:`` asks for an expression that uses each given number exactly once, with the binary operators
+ - * (usual precedence, no parentheses), and equals the target: ``3*5+7``, ``5*3+7``, ``7+3*5`` and ``7+5*3`` are
all correct, so one prompt has many right answers and the verifier checks any of them exactly (it reads the prompt,
not a stored label). Difficulty = number of operands. Every problem is solvable: its target is the value of a random
expression over its numbers. Eval: in-distribution = unseen problems with min_operands..max_operands operands;
out-of-distribution = more operands than ever trained on (up to eval_max_operands).

Proposing (propose.mode 'task_native'): the request ``?3`` asks the policy for a problem with 3 numbers, written as
a prompt (``3,5,7>22:``); the seed data teaches it with solvable examples, and ``proposed_row`` accepts a proposal
only if it parses, its numbers and size are those a training problem may have, and ``solvable`` finds an expression.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass

import numpy as np

from selfimprove.core import seeding
from selfimprove.core.prompts import prompt_key
from selfimprove.core.typed_yaml import option
from selfimprove.tasks import FixedSets, Task, split_accuracy


@dataclass
class CountdownConfig:
    """Options of the countdown task."""

    min_operands: int = option(2, "Fewest numbers in a problem (seed, rounds and in-distribution eval).", ge=1)
    max_operands: int = option(3, "Most numbers in a problem trained on; eval beyond it is out-of-distribution.", ge=1)
    max_number: int = option(9, "Numbers are drawn from 1..max_number.")
    seed_size: int = option(20000, "Labelled seed problems, one random solution each.", ge=1)
    prompts_per_round: int = option(
        1000, "Unlabelled problems per round (the verifier checks answers against the prompt itself).", ge=1
    )
    eval_max_operands: int = option(4, "Evaluate min_operands..eval_max_operands operands.", ge=1)
    eval_size_per_level: int = option(200, "Eval problems per operand count (fewer when the space is smaller).", ge=1)
    dev_size_per_level: int = option(
        0,
        "Dev problems per operand count (a split of their own, drawn apart from the eval sets and kept out of "
        "training): labelled rows a decision may read (dev/... metrics). 0 = none.",
        ge=0,
    )

    def check(self) -> list[str]:
        p = []
        if not 1 <= self.min_operands <= self.max_operands <= self.eval_max_operands:
            p.append(
                f"need 1 <= min_operands ({self.min_operands}) <= max_operands ({self.max_operands}) <= "
                f"eval_max_operands ({self.eval_max_operands})."
            )
        if not 1 <= self.max_number <= 99:
            p.append(f"max_number={self.max_number} must be in 1..99.")
        return p


_PROMPT = re.compile(r"^(\d+(?:,\d+)*)>(-?\d+):$")
_EXPR = re.compile(r"^\d+(?:[-+*]\d+)*$")
OPS = "+-*"


def evaluate_expression(expr: str) -> int:
    """Value of a validated expression (digits and + - *), products first, left to right."""
    total, sign, product = 0, 1, None
    for tok in re.findall(r"\d+|[-+*]", expr):
        if tok in "+-":
            total += sign * product
            sign, product = (1 if tok == "+" else -1), None
        elif tok == "*":
            continue
        else:
            product = int(tok) if product is None else product * int(tok)
    return total + sign * product


def parse_prompt(prompt: str) -> tuple[list[int], int] | None:
    m = _PROMPT.match(prompt)
    return None if m is None else ([int(x) for x in m.group(1).split(",")], int(m.group(2)))


@functools.lru_cache(maxsize=65536)
def reachable(numbers: tuple[int, ...]) -> frozenset[int]:
    """Every value an expression over these numbers (each once, + - *, no parentheses) takes: the task's solver."""
    values = set()
    for order in set(itertools.permutations(numbers)):
        for ops in itertools.product(OPS, repeat=len(order) - 1):
            values.add(evaluate_expression(str(order[0]) + "".join(f"{o}{x}" for o, x in zip(ops, order[1:]))))
    return frozenset(values)


def solvable(numbers: list[int], target: int) -> bool:
    return target in reachable(tuple(sorted(numbers)))


def check(prompt: str, completion: str) -> bool:
    """Each number used exactly once, only + - *, and the value equals the target."""
    problem = parse_prompt(prompt)
    if problem is None or not _EXPR.match(completion):
        return False
    numbers, target = problem
    if sorted(int(x) for x in re.findall(r"\d+", completion)) != sorted(numbers):
        return False
    return evaluate_expression(completion) == target


class CountdownTask(FixedSets, Task):
    EVAL_SIZE, DEV_SIZE = "eval_size_per_level", "dev_size_per_level"
    name = "countdown"
    Config = CountdownConfig
    proposes = True
    system_prompt = ""
    fewshot_examples = ()
    PROPOSE_MARK = "?"

    def source_files(self) -> list[str]:
        return []  # every problem is generated from the seed

    def __init__(self, cfg: CountdownConfig, seed: int):
        self.cfg, self.seed = cfg, seed

    def alphabet(self) -> str:
        return "0123456789,>:+-*"

    def _problem(self, rng, n: int) -> dict:
        numbers = [int(x) for x in rng.integers(1, self.cfg.max_number + 1, n)]
        order = rng.permutation(n)
        ops = rng.choice(list(OPS), n - 1)
        expr = str(numbers[order[0]]) + "".join(f"{o}{numbers[i]}" for o, i in zip(ops, order[1:]))
        prompt = ",".join(map(str, numbers)) + f">{evaluate_expression(expr)}:"
        return {"prompt": prompt, "completion": expr, "difficulty": n}

    def _operands(self, rng) -> int:
        return int(rng.integers(self.cfg.min_operands, self.cfg.max_operands + 1))

    def _fixed_set(self, stream: str, name: str, size: int, exclude: set[str]) -> list[dict]:
        """Each operand count from its own sub-stream, so a set never depends on which other counts are drawn."""
        rows, c = [], self.cfg
        for n in range(c.min_operands, c.eval_max_operands + 1):
            rng, seen = seeding.rng(self.seed, stream, 0, n), set()
            for _ in range(50 * size):  # small problem spaces (2 operands) run out of new prompts
                if len(seen) == size:
                    break
                p = self._problem(rng, n)
                if p["prompt"] in seen or prompt_key(p["prompt"]) in exclude:
                    continue
                seen.add(p["prompt"])
                rows.append(
                    {
                        "prompt_id": f"{name}-n{n}-{len(seen) - 1}",
                        "prompt": p["prompt"],
                        "reference": p["prompt"],
                        "difficulty": n,
                        "split": "id" if n <= c.max_operands else "ood",
                    }
                )
        return rows

    def seed_data(self, exclude: set[str] = frozenset()) -> list[dict]:
        rng, rows = seeding.rng(self.seed, "seed_data"), []
        while len(rows) < self.cfg.seed_size:
            p = self._problem(rng, self._operands(rng))
            if prompt_key(p["prompt"]) not in exclude:
                rows.append({"prompt_id": f"seed-{len(rows)}", **p})
        return rows

    def round_prompts(self, k: int, history: list[dict], exclude: set[str]) -> list[dict]:
        rng, rows = seeding.rng(self.seed, "round_prompts", k), []
        while len(rows) < self.cfg.prompts_per_round:
            p = self._problem(rng, self._operands(rng))
            if prompt_key(p["prompt"]) in exclude:
                continue
            # The verifier needs no stored answer: the prompt is the reference (numbers and target).
            rows.append(
                {
                    "prompt_id": f"r{k}-{len(rows)}",
                    "prompt": p["prompt"],
                    "difficulty": p["difficulty"],
                    "reference": p["prompt"],
                }
            )
        return rows

    def propose_requests(self, n: int, rng, k: int = 0, history: list[dict] = ()) -> list[str]:
        """n task-native proposal requests ('?N': a problem with N numbers), sizes drawn as training problems'."""
        return [f"{self.PROPOSE_MARK}{self._operands(rng)}" for _ in range(n)]

    def write_problem(self, request: str, rng) -> str:
        """The task's own answer to a request: a random solvable problem of the requested size."""
        return self._problem(rng, int(request[len(self.PROPOSE_MARK) :]))["prompt"]

    def proposed_row(self, text: str) -> tuple[dict | None, str]:
        """A proposal as a round prompt row, or None and why it is not a valid problem."""
        problem = parse_prompt(text.strip())
        if problem is None:
            return None, "malformed"
        numbers, target = problem
        c = self.cfg
        if not c.min_operands <= len(numbers) <= c.max_operands:
            return None, "size"
        if not all(1 <= x <= c.max_number for x in numbers):
            return None, "numbers"
        if not solvable(numbers, target):
            return None, "unsolvable"
        prompt = text.strip()
        return {"prompt": prompt, "difficulty": len(numbers), "reference": prompt}, ""

    def answer(self, completion: str) -> str | None:
        """The expression itself: distinct correct expressions are distinct answers."""
        return completion if _EXPR.match(completion) else None

    def is_correct(self, completion: str, reference: str) -> bool:
        return check(reference, completion)

    def format_ok(self, prompt: str, completion: str, finished: bool) -> bool:
        problem = parse_prompt(prompt)
        return (
            finished
            and problem is not None
            and bool(_EXPR.match(completion))
            and len(re.findall(r"\d+", completion)) == len(problem[0])
        )

    def max_new_tokens(self, rows: list[dict]) -> int:
        return max(len(r["prompt"]) for r in rows) + 2  # an expression is never longer than its prompt

    def eval_metrics(self, rows: list[dict]) -> dict:
        out = split_accuracy(rows)
        for n in sorted({r["difficulty"] for r in rows}):
            out[f"eval/accuracy/n{n}"] = float(np.mean([r["correct"] for r in rows if r["difficulty"] == n]))
        return out
