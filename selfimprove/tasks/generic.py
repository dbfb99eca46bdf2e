"""Your own prompts: files (JSONL/JSON/Parquet/CSV) or a hub dataset id, loaded with ``datasets``.

Columns are named in the recipe (``prompt_field``, ``answer_field``, ``difficulty_field``). A prompt template (Jinja,
sandboxed, over the row's columns) turns a row into the user message, the same way for round prompts, eval sets, seed
data and few-shot examples; a system prompt and few-shot examples are added around it by ``selfimprove.prompts``.
Answers are checked by exact match, by numeric value, by the final regex match, or by Hugging Face's ``math-verify``
(``\\boxed{}``, LaTeX, fractions, numbers in text), as open-r1 and TRL's accuracy reward check them.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

from selfimprove.tasks import rng_for, split_accuracy

ROUND_STREAM = 3
_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
TEXT_FILE_SUFFIXES = (".j2", ".jinja", ".txt")


def load_table(source: str, split: str = "train", subset: str = "") -> list[dict]:
    """Rows of a local file or a hub dataset id (a missing local file gets a clear error, not a hub lookup)."""
    from datasets import load_dataset

    suffix = Path(source).suffix.lower()
    if suffix in _FORMATS:
        if not Path(source).exists():
            raise FileNotFoundError(f"{source} does not exist. Fix the path in task.generic (paths are relative to where you run).")
        return load_dataset(_FORMATS[suffix], data_files=source, split="train").to_list()
    return load_dataset(source, subset or None, split=split).to_list()


def text_or_file(value: str, field: str) -> str:
    """``value`` itself, or the contents of the file it names (a path ending in .j2 / .jinja / .txt)."""
    if value.endswith(TEXT_FILE_SUFFIXES):
        if not Path(value).is_file():
            raise FileNotFoundError(f"task.generic.{field}={value!r} names a file that does not exist. Fix the path, "
                                    "or write the text itself in the recipe.")
        return Path(value).read_text()
    return value


class PromptTemplate:
    """A Jinja template over a row's columns, in a sandbox (a recipe cannot reach Python through it); a column the
    template names but a row lacks is an error naming both, never an empty string."""

    def __init__(self, source: str, field: str):
        from jinja2 import StrictUndefined
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        self.field = field
        self.template = None
        if source:
            env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
            self.template = env.from_string(source)

    def render(self, row: dict, fallback: str, where: str) -> str:
        if self.template is None:
            return fallback
        from jinja2 import UndefinedError

        try:
            return self.template.render(**row)
        except UndefinedError as err:
            raise KeyError(f"task.generic.{self.field}: {err} in {where} (columns: {sorted(row)}). Use those column "
                           "names in the template, or fix the data.") from None


@functools.lru_cache(maxsize=65536)
def _math(text: str):
    from math_verify import parse

    return tuple(parse(text))


class GenericTask:
    name = "generic"

    def __init__(self, cfg, seed: int):
        self.cfg, self.seed = cfg, seed
        self._regex = re.compile(cfg.answer_regex)
        self._reference = re.compile(cfg.reference_regex) if cfg.reference_regex else None
        self._template = PromptTemplate(text_or_file(cfg.prompt_template, "prompt_template"), "prompt_template")
        self.system_prompt = text_or_file(cfg.system_prompt, "system_prompt")
        self.fewshot_examples = tuple(self._fewshot())

    def _field(self, row: dict, name: str, source: str, required: bool = True):
        if name not in row:
            if required:
                raise KeyError(f"{source}: rows have no column {name!r} (columns: {sorted(row)}). Set the task.generic field naming it.")
            return None
        return row[name]

    def _render(self, row: dict, source: str, i: int) -> tuple[str, str]:
        """(user message, the row's own prompt text before the template)."""
        text = str(self._field(row, self.cfg.prompt_field, source))
        return self._template.render(row, text, f"{source} row {i}"), text

    def _fewshot(self) -> list[tuple[str, str]]:
        if not self.cfg.fewshot:
            return []
        rows = load_table(self.cfg.fewshot)
        rows = rows[: self.cfg.fewshot_count] if self.cfg.fewshot_count else rows
        return [(self._render(r, self.cfg.fewshot, i)[0], str(self._field(r, self.cfg.fewshot_completion_field, self.cfg.fewshot)))
                for i, r in enumerate(rows)]

    def _prompt_rows(self, source: str, id_prefix: str, split: str | None = None) -> list[dict]:
        rows = []
        for i, row in enumerate(load_table(source, split or self.cfg.split, self.cfg.subset)):
            answer = self._field(row, self.cfg.answer_field, source, required=False)
            if answer is not None and self._reference is not None:  # e.g. GSM8K's "... #### 72" -> "72"
                found = self._reference.findall(str(answer))
                answer = (found[-1] if isinstance(found[-1], str) else found[-1][0]).replace(",", "") if found else None
            difficulty = self._field(row, self.cfg.difficulty_field, source, required=False)
            prompt, own = self._render(row, source, i)
            rows.append({"prompt_id": f"{id_prefix}-{i}", "prompt": prompt, "source_prompt": own,
                         "reference": "" if answer is None else str(answer), "difficulty": int(difficulty or 0)})
        return rows

    def alphabet(self) -> str:
        texts = [r["prompt"] + r.get("completion", "") for r in self.seed_data()] if self.cfg.seed_data else []
        return "".join(sorted({c for t in texts for c in t}))

    def seed_data(self, exclude: set[str] = frozenset()) -> list[dict]:
        if not self.cfg.seed_data:
            return []
        rows, out = load_table(self.cfg.seed_data), []
        for i, r in enumerate(rows):
            prompt, own = self._render(r, self.cfg.seed_data, i)
            if prompt not in exclude:
                out.append({"prompt_id": f"seed-{i}", "prompt": prompt, "source_prompt": own,
                            "completion": str(self._field(r, "completion", self.cfg.seed_data)),
                            "difficulty": int(r.get(self.cfg.difficulty_field) or 0)})
        return out

    def eval_sets(self) -> list[dict]:
        out = []
        for split, source in (("id", self.cfg.eval_id), ("ood", self.cfg.eval_ood)):
            if source:
                out += [{**r, "split": split} for r in self._prompt_rows(source, f"eval-{split}", self.cfg.eval_split)]
        return out

    def round_prompts(self, k: int, history: list[dict], exclude: set[str]) -> list[dict]:
        rows = [r for r in self._prompt_rows(self.cfg.prompts, "p") if r["prompt"] not in exclude]
        n = self.cfg.prompts_per_round
        if not n or n >= len(rows):
            return rows
        # One seeded permutation for the whole run, consumed in slices: no prompt repeats until all were used.
        order = rng_for(self.seed, ROUND_STREAM).permutation(len(rows)).tolist()
        start = ((k - 1) * n) % len(rows)
        return [rows[order[(start + i) % len(rows)]] for i in range(n)]

    def answer(self, completion: str) -> str | None:
        if self.cfg.verifier == "exact":
            return completion.strip() or None
        if self.cfg.verifier == "math":
            parsed = _math(completion)
            return str(parsed[0]) if parsed else None
        matches = self._regex.findall(completion) if self.cfg.verifier == "regex" else re.findall(r"-?\d+(?:\.\d+)?", completion)
        if not matches:
            return None
        last = matches[-1] if isinstance(matches[-1], str) else matches[-1][0]
        return last.replace(",", "")  # 1,234 == 1234

    def is_correct(self, completion: str, reference: str) -> bool:
        if self.cfg.verifier == "math":
            from math_verify import verify

            gold, pred = _math(reference), _math(completion)
            return bool(gold and pred) and verify(list(gold), list(pred))
        got = self.answer(completion)
        if got is None:
            return False
        if self.cfg.verifier == "exact":
            return got == reference.strip()
        try:
            return math.isclose(float(got), float(reference), rel_tol=1e-6, abs_tol=1e-9)
        except ValueError:
            return got == reference.strip()

    def format_ok(self, prompt: str, completion: str, finished: bool) -> bool:
        """Finished with EOS and has an extractable answer."""
        return finished and self.answer(completion) is not None

    def max_new_tokens(self, rows: list[dict]) -> int:
        return self.cfg.max_new_tokens

    def eval_metrics(self, rows: list[dict]) -> dict:
        return split_accuracy(rows)
