"""Your own prompts: files (JSONL/JSON/Parquet/CSV) or a hub dataset id, loaded with ``datasets``.

Columns are named in the recipe (``prompt_field``, ``answer_field``, ``difficulty_field``). A prompt template (Jinja,
sandboxed, over the row's columns) turns a row into the user message, the same way for round prompts, eval sets, seed
data and few-shot examples; a system prompt and few-shot examples are added around it by ``selfimprove.core.prompts``.
Answers are checked by exact match, by numeric value, by the final regex match, or by Hugging Face's ``math-verify``
(``\\boxed{}``, LaTeX, fractions, numbers in text), as open-r1 and TRL's accuracy reward check them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from selfimprove.core import seeding
from selfimprove.core.errors import DataError
from selfimprove.core.prompts import prompt_key
from selfimprove.core.typed_yaml import option
from selfimprove.tasks import Task, split_accuracy


@dataclass
class GenericConfig:
    """Options of the generic task."""

    prompts: str = option(
        "", "Prompts to self-train on: a .jsonl/.json/.parquet/.csv file or a hub dataset id (loaded with datasets)."
    )
    split: str = option("train", "Split of a hub dataset (files load as 'train').")
    subset: str = option("", "Configuration name of a hub dataset (e.g. 'main' for openai/gsm8k).")
    eval_split: str = option("test", "Split of hub eval datasets.")
    reference_regex: str = option(
        "",
        "Extract the reference answer from the answer column (last match, commas dropped), e.g. '#### (-?[0-9.,]+)' "
        "for GSM8K; empty = the column as it is.",
    )
    prompt_field: str = option("prompt", "Column holding the prompt text.")
    answer_field: str = option(
        "answer", "Column holding the reference answer (optional; used only by the verifier judge and metrics)."
    )
    difficulty_field: str = option("difficulty", "Column holding an integer difficulty (optional).")
    seed_data: str = option(
        "", "Labelled round-0 data: the prompt column and seed_completion_field (TRL's prompt-completion format)."
    )
    seed_completion_field: str = option("completion", "Column of seed_data holding each prompt's answer.")
    eval_id: str = option("", "In-distribution eval set (prompt + answer columns).")
    eval_ood: str = option("", "Out-of-distribution eval set (prompt + answer columns).")
    eval_answers: bool = option(
        True,
        "Eval rows must carry a reference answer (answer_field); false for judge-only evaluation, where eval/accuracy "
        "is not meaningful (e.g. open-ended prompts).",
    )
    prompt_template: str = option(
        "",
        "Jinja template of the user message over the row's columns, e.g. '{{ question }} Put your final answer within "
        "\\boxed{}.'; a path ending in .j2/.jinja/.txt reads it from that file; empty = the prompt_field column as it "
        "is. Applied alike to round prompts, eval sets, seed data and few-shot examples.",
    )
    system_prompt: str = option(
        "",
        "System prompt before every prompt: a system turn with generate.chat_template, else the first paragraph of the "
        "text; a path ending in .txt reads it from that file.",
    )
    fewshot: str = option(
        "",
        "File of few-shot examples (the prompt columns plus fewshot_completion_field), rendered with prompt_template "
        "and shown before every prompt: user/assistant turns with generate.chat_template, else prompt + completion "
        "paragraphs.",
    )
    fewshot_completion_field: str = option("completion", "Column holding each few-shot example's answer.")
    fewshot_count: int = option(0, "Use the first this many few-shot examples (0 = all).", ge=0)
    verifier: Literal["exact", "numeric", "regex", "math"] = option(
        "exact",
        "How an answer is checked against the reference: exact string, numeric value of the last number, the last "
        "answer_regex match, or 'math' (math-verify: \\boxed{}, LaTeX, fractions, numbers in text).",
    )
    answer_regex: str = option(
        r"(-?\d+(?:\.\d+)?)\s*$", "With verifier 'regex': the first group of the last match is the final answer."
    )
    prompts_per_round: int = option(
        0, "Prompts drawn (without replacement across rounds) per round; 0 uses all every round.", ge=0
    )
    max_new_tokens: int = option(256, "Generation length limit for this task.", ge=1)

    def check(self) -> list[str]:
        return []


_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
TEXT_FILE_SUFFIXES = (".j2", ".jinja", ".txt")


def _root_message(err: BaseException) -> str:
    """The first line of the innermost cause's message (``datasets`` wraps its parsers' errors)."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@contextlib.contextmanager
def _quiet_datasets():
    log = logging.getLogger("datasets")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def is_local_file(source: str) -> bool:
    return Path(source).suffix.lower() in _FORMATS


def load_table(source: str, field: str, split: str = "train", subset: str = "") -> list[dict]:
    """Rows of a local file or a hub dataset id that the recipe field ``task.generic.<field>`` names; a file that is
    missing, unreadable or empty is a DataError naming the field and the file (never a hub lookup, never a traceback
    from inside ``datasets``)."""
    where = f"task.generic.{field}"
    from datasets import load_dataset

    if is_local_file(source):
        if not Path(source).is_file():
            raise DataError(
                f"{where}: {source} does not exist. Fix the path (data paths are relative to where you run)."
            )
        fmt = _FORMATS[Path(source).suffix.lower()]
        try:
            if fmt != "parquet":  # a text file that is not UTF-8 fails here, with the byte offset
                Path(source).read_text(encoding="utf-8")
            with _quiet_datasets():  # it logs its own error before raising; ours below says it once
                rows = load_dataset(fmt, data_files=source, split="train").to_list()
        except UnicodeDecodeError as err:
            raise DataError(
                f"{where}: {source} is not UTF-8 text ({err.reason} at byte {err.start}). Save it as UTF-8."
            ) from None
        except Exception as err:  # datasets' parsers raise many types; name the file and what the parser said
            first = _root_message(err)
            raise DataError(
                f"{where}: {source} cannot be read as {Path(source).suffix} ({first[:300]}). Fix the file: one JSON "
                "object per line for .jsonl, a header row for .csv."
            ) from None
    else:
        try:
            rows = load_dataset(source, subset or None, split=split).to_list()
        except Exception as err:
            raise DataError(
                f"{where}: hub dataset {source!r} (config {subset or None!r}, split {split!r}) does not load: "
                f"{str(err).strip().splitlines()[0][:300]}. Check the id, subset and split, or download it "
                "first (it is not in the cache when the hub is offline)."
            ) from None
    if not rows:
        raise DataError(f"{where}: {source} has no rows. Point it at a file with data.")
    return rows


def text_or_file(value: str, field: str) -> str:
    """``value`` itself, or the contents of the file it names (a path ending in .j2 / .jinja / .txt)."""
    if value.endswith(TEXT_FILE_SUFFIXES):
        if not Path(value).is_file():
            raise DataError(
                f"task.generic.{field}={value!r} names a file that does not exist. Fix the path, or write "
                "the text itself in the recipe."
            )
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
            raise DataError(
                f"task.generic.{self.field}: {err} in {where} (columns: {sorted(row)}). Use those column "
                "names in the template, or fix the data."
            ) from None


def _difficulty(value, source: str, i: int, column: str) -> int:
    if value is None or value == "":
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DataError(
            f"{source} row {i}: difficulty column {column!r} holds {value!r}, not an integer. Fix it, or "
            "point task.generic.difficulty_field at an integer column."
        ) from None


@functools.lru_cache(maxsize=65536)
def _math(text: str):
    from math_verify import parse

    return tuple(parse(text))


class GenericTask(Task):
    name = "generic"
    Config = GenericConfig

    @classmethod
    def recipe_problems(cls, recipe) -> list[str]:
        g, p = recipe.task.generic, []
        if not g.prompts:
            p.append("task.generic.prompts is empty: point it at a prompts file or hub dataset id.")
        if not (g.eval_id or g.eval_ood):
            p.append("task.generic: set eval_id and/or eval_ood so every round can be evaluated.")
        if recipe.model.path is None and not g.seed_data:
            p.append(
                "model.path is null (a from-scratch model) but task.generic.seed_data is empty: a random model needs "
                "labelled seed data."
            )
        return p

    def __init__(self, cfg: GenericConfig, seed: int):
        self.cfg, self.seed = cfg, seed
        self._regex = re.compile(cfg.answer_regex)
        self._reference = re.compile(cfg.reference_regex) if cfg.reference_regex else None
        self._template = PromptTemplate(text_or_file(cfg.prompt_template, "prompt_template"), "prompt_template")
        self.system_prompt = text_or_file(cfg.system_prompt, "system_prompt")

    @functools.cached_property
    def fewshot_examples(self) -> tuple:
        """(prompt, completion) pairs, read when first used, so a missing file is one of data_problems' problems."""
        return tuple(self._fewshot())

    def source_files(self) -> list[str]:
        c = self.cfg
        return [f for f in (c.prompts, c.eval_id, c.eval_ood, c.seed_data, c.fewshot) if f and is_local_file(f)] + [
            f for f in (c.prompt_template, c.system_prompt) if f.endswith(TEXT_FILE_SUFFIXES)
        ]

    @staticmethod
    def _field(row: dict, name: str, source: str, i: int, required: bool = True, field: str = ""):
        """A row's value of column ``name``; a missing column, or a null or empty value where one is required, is a
        DataError naming the file, the row and the recipe field that names the column."""
        if name not in row:
            if required:
                raise DataError(
                    f"{source}: rows have no column {name!r} (columns: {sorted(row)}). Set "
                    f"task.generic.{field or 'the field naming it'} to one of them."
                )
            return None
        value = row[name]
        if required and (value is None or (isinstance(value, str) and not value.strip())):
            raise DataError(
                f"{source} row {i}: column {name!r} is {'null' if value is None else 'empty'}. Fill it "
                "or remove the row: it would be used as the literal text 'None' or ''."
            )
        return value

    def _render(self, row: dict, source: str, i: int) -> tuple[str, str]:
        """(user message, the row's own prompt text before the template)."""
        text = str(self._field(row, self.cfg.prompt_field, source, i, field="prompt_field"))
        return self._template.render(row, text, f"{source} row {i}"), text

    def _fewshot(self) -> list[tuple[str, str]]:
        if not self.cfg.fewshot:
            return []
        rows = load_table(self.cfg.fewshot, "fewshot")
        rows = rows[: self.cfg.fewshot_count] if self.cfg.fewshot_count else rows
        return [
            (
                self._render(r, self.cfg.fewshot, i)[0],
                str(
                    self._field(
                        r, self.cfg.fewshot_completion_field, self.cfg.fewshot, i, field="fewshot_completion_field"
                    )
                ),
            )
            for i, r in enumerate(rows)
        ]

    def _prompt_rows(self, field: str, id_prefix: str, split: str | None = None, answers: bool = False) -> list[dict]:
        """Prompt rows of the file or dataset ``task.generic.<field>`` names; with ``answers``, every row must carry
        a reference answer."""
        rows, source = [], getattr(self.cfg, field)
        for i, row in enumerate(load_table(source, field, split or self.cfg.split, self.cfg.subset)):
            raw = answer = self._field(row, self.cfg.answer_field, source, i, required=answers, field="answer_field")
            if answer is not None and self._reference is not None:  # e.g. GSM8K's "... #### 72" -> "72"
                found = self._reference.findall(str(answer))
                answer = (found[-1] if isinstance(found[-1], str) else found[-1][0]).replace(",", "") if found else None
            if answers and answer is None:
                raise DataError(
                    f"{source} row {i}: reference_regex {self.cfg.reference_regex!r} finds no answer in "
                    f"{str(raw)[:80]!r}. Fix the regex or the row."
                )
            difficulty = self._field(row, self.cfg.difficulty_field, source, i, required=False)
            prompt, own = self._render(row, source, i)
            rows.append(
                {
                    "prompt_id": f"{id_prefix}-{i}",
                    "prompt": prompt,
                    "source_prompt": own,
                    "reference": "" if answer is None else str(answer),
                    "difficulty": _difficulty(difficulty, source, i, self.cfg.difficulty_field),
                }
            )
        return rows

    def data_problems(self) -> list[str]:
        """Every file and column problem of the section at once, each naming its field: each file that does not
        load, then each column a field names, with every file that lacks it."""
        c, problems, tables = self.cfg, [], {}
        for field in ("prompts", "seed_data", "eval_id", "eval_ood", "fewshot"):
            if getattr(c, field):
                split = c.eval_split if field.startswith("eval_") else c.split
                try:
                    tables[field] = load_table(getattr(c, field), field, split, c.subset)
                except DataError as err:
                    problems.append(str(err))
        needs = {name: ["prompt_field"] for name in tables}
        needs.get("seed_data", []).append("seed_completion_field")
        needs.get("fewshot", []).append("fewshot_completion_field")
        for name in ("eval_id", "eval_ood"):
            if c.eval_answers and name in needs:
                needs[name].append("answer_field")
        lacking: dict[str, list[str]] = {}
        for name, columns in needs.items():
            for column_field in columns:
                if getattr(c, column_field) not in tables[name][0]:
                    lacking.setdefault(column_field, []).append(name)
        for column_field, names in lacking.items():
            files = "; ".join(f"{n} ({getattr(c, n)}: columns {sorted(tables[n][0])})" for n in names)
            problems.append(
                f"task.generic.{column_field}: column {getattr(c, column_field)!r} is missing from {files}. Rename "
                f"the column in the file(s), or set task.generic.{column_field} to the column that holds it."
            )
        return problems

    def alphabet(self) -> str:
        texts = [r["prompt"] + r.get("completion", "") for r in self.seed_data()] if self.cfg.seed_data else []
        return "".join(sorted({c for t in texts for c in t}))

    def seed_data(self, exclude: set[str] = frozenset()) -> list[dict]:
        if not self.cfg.seed_data:
            return []
        rows, out = load_table(self.cfg.seed_data, "seed_data"), []
        for i, r in enumerate(rows):
            prompt, own = self._render(r, self.cfg.seed_data, i)
            if prompt_key(prompt) not in exclude:
                out.append(
                    {
                        "prompt_id": f"seed-{i}",
                        "prompt": prompt,
                        "source_prompt": own,
                        "completion": str(
                            self._field(
                                r, self.cfg.seed_completion_field, self.cfg.seed_data, i, field="seed_completion_field"
                            )
                        ),
                        "difficulty": _difficulty(
                            r.get(self.cfg.difficulty_field), self.cfg.seed_data, i, self.cfg.difficulty_field
                        ),
                    }
                )
        return out

    def eval_sets(self) -> list[dict]:
        out = []
        for split in ("id", "ood"):
            if getattr(self.cfg, f"eval_{split}"):
                rows = self._prompt_rows(f"eval_{split}", f"eval-{split}", self.cfg.eval_split, self.cfg.eval_answers)
                out += [{**r, "split": split} for r in rows]
        return out

    def dev_sets(self, exclude: set[str]) -> list[dict]:
        return []  # no dev file yet: decisions read label-free metrics and the probe

    def held_out(self, stream: str, size: int, exclude: set[str]) -> list[dict]:
        """``size`` distinct prompts held out of the prompts pool by ``stream`` (at most a quarter of its distinct
        prompts), none in ``exclude``: the run's excluded prompts then keep them (and their repeats) out of every
        round. Their answers, where the pool has them, are references a decision may read: not the eval sets'."""
        distinct: dict[str, dict] = {}
        for r in self._prompt_rows("prompts", "held"):
            if prompt_key(r["prompt"]) not in exclude:
                distinct.setdefault(prompt_key(r["prompt"]), r)
        rows = list(distinct.values())
        order = seeding.rng(self.seed, stream).permutation(len(rows))[: min(size, len(rows) // 4)]
        return [{**rows[i], "split": "id"} for i in sorted(order)]

    def round_prompts(self, k: int, history: list[dict], exclude: set[str]) -> list[dict]:
        rows = [r for r in self._prompt_rows("prompts", "p") if prompt_key(r["prompt"]) not in exclude]
        n = self.cfg.prompts_per_round
        if not n or n >= len(rows):
            return rows
        # One seeded permutation for the whole run, consumed in slices: no prompt repeats until all were used.
        order = seeding.rng(self.seed, "round_prompts").permutation(len(rows)).tolist()
        start = ((k - 1) * n) % len(rows)
        return [rows[order[(start + i) % len(rows)]] for i in range(n)]

    def proposed_row(self, text: str) -> tuple[dict | None, str]:
        """A proposed prompt (self_instruct / evolve) as a round prompt row through the prompt template; no reference,
        so its learnability is measured label-free (vote agreement)."""
        text = text.strip()
        if not text:
            return None, "empty"
        try:
            prompt, own = self._render({self.cfg.prompt_field: text}, "proposal", 0)
        except DataError:  # the template names columns a bare proposal does not have
            return None, "template"
        return {"prompt": prompt, "source_prompt": own, "reference": "", "difficulty": 0}, ""

    def answer(self, completion: str) -> str | None:
        if self.cfg.verifier == "exact":
            return completion.strip() or None
        if self.cfg.verifier == "math":
            parsed = _math(completion)
            return str(parsed[0]) if parsed else None
        matches = (
            self._regex.findall(completion)
            if self.cfg.verifier == "regex"
            else re.findall(r"-?\d+(?:\.\d+)?", completion)
        )
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
