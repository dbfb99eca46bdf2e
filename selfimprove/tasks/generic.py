"""Your own prompts: files (JSONL/JSON/Parquet/CSV) or a hub dataset id, loaded with ``datasets``.

Columns are named in the recipe (``prompt_field``, ``answer_field``, ``difficulty_field``). Answers are checked by
exact match, by numeric value, or by the final regex match in the completion.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from selfimprove.tasks import rng_for, split_accuracy

ROUND_STREAM = 3
_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def load_table(source: str, split: str = "train", subset: str = "") -> list[dict]:
    """Rows of a local file or a hub dataset id (a missing local file gets a clear error, not a hub lookup)."""
    from datasets import load_dataset

    suffix = Path(source).suffix.lower()
    if suffix in _FORMATS:
        if not Path(source).exists():
            raise FileNotFoundError(f"{source} does not exist. Fix the path in task.generic (paths are relative to where you run).")
        return load_dataset(_FORMATS[suffix], data_files=source, split="train").to_list()
    return load_dataset(source, subset or None, split=split).to_list()


class GenericTask:
    name = "generic"

    def __init__(self, cfg, seed: int):
        self.cfg, self.seed = cfg, seed
        self._regex = re.compile(cfg.answer_regex)
        self._reference = re.compile(cfg.reference_regex) if cfg.reference_regex else None

    def _field(self, row: dict, name: str, source: str, required: bool = True):
        if name not in row:
            if required:
                raise KeyError(f"{source}: rows have no column {name!r} (columns: {sorted(row)}). Set the task.generic field naming it.")
            return None
        return row[name]

    def _prompt_rows(self, source: str, id_prefix: str, split: str | None = None) -> list[dict]:
        rows = []
        for i, row in enumerate(load_table(source, split or self.cfg.split, self.cfg.subset)):
            answer = self._field(row, self.cfg.answer_field, source, required=False)
            if answer is not None and self._reference is not None:  # e.g. GSM8K's "... #### 72" -> "72"
                found = self._reference.findall(str(answer))
                answer = (found[-1] if isinstance(found[-1], str) else found[-1][0]).replace(",", "") if found else None
            difficulty = self._field(row, self.cfg.difficulty_field, source, required=False)
            rows.append({"prompt_id": f"{id_prefix}-{i}", "prompt": str(self._field(row, self.cfg.prompt_field, source)),
                         "reference": "" if answer is None else str(answer), "difficulty": int(difficulty or 0)})
        return rows

    def alphabet(self) -> str:
        texts = [r["prompt"] + r.get("completion", "") for r in self.seed_data()] if self.cfg.seed_data else []
        return "".join(sorted({c for t in texts for c in t}))

    def seed_data(self, exclude: set[str] = frozenset()) -> list[dict]:
        if not self.cfg.seed_data:
            return []
        rows = load_table(self.cfg.seed_data)
        return [{"prompt_id": f"seed-{i}", "prompt": str(self._field(r, "prompt", self.cfg.seed_data)),
                 "completion": str(self._field(r, "completion", self.cfg.seed_data)),
                 "difficulty": int(r.get(self.cfg.difficulty_field) or 0)}
                for i, r in enumerate(rows) if r["prompt"] not in exclude]

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
        matches = self._regex.findall(completion) if self.cfg.verifier == "regex" else re.findall(r"-?\d+(?:\.\d+)?", completion)
        if not matches:
            return None
        last = matches[-1] if isinstance(matches[-1], str) else matches[-1][0]
        return last if self.cfg.verifier == "exact" else last.replace(",", "")  # 1,234 == 1234

    def is_correct(self, completion: str, reference: str) -> bool:
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
