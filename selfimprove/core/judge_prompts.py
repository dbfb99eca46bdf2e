"""How the LLM judge is prompted, shared by the judge stage (which asks) and round-0 training (which teaches the
policy to answer: evaluation fine-tuning, EFT, Yuan et al. 2024, Self-Rewarding Language Models).

Templates are text files with {prompt}, {completion} (pointwise) or {prompt}, {a}, {b} (pairwise), and {max_score};
the built-in ones are in judge_templates/. Judged text is untrusted: fields are substituted in one pass, so a
completion containing "{b}" stays literal, and the template's fence tags are neutralised inside it.

EFT rows are the pointwise judge prompt with a seed problem and a candidate answer, the seed's own answer
(``Score: max_score``) or a corrupted one (the task's ``corrupt``, ``Score: 0``), encoded exactly as the judge stage
encodes its prompts (``judge_format``); the score comes from correctness alone, as the paper builds its EFT data from
graded answers."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from selfimprove.core.errors import DataError
from selfimprove.core.prompts import PromptFormat
from selfimprove.core.typed_yaml import ConfigError

_FIELDS = re.compile(r"\{(prompt|completion|a|b|max_score)\}")
_FENCE = re.compile(r"<(\s*/?\s*(?:task|response_a|response_b|response)\s*)>", re.I)


def load_template(path: str, mode: str) -> str:
    if path:
        if not Path(path).is_file():
            raise DataError(
                f"judge.llm.template={path!r} does not exist. Point it at a text file with "
                "{prompt} and {completion} (pointwise) or {a} and {b} (pairwise), or leave it empty."
            )
        return Path(path).read_text()
    return resources.files("selfimprove.core").joinpath("judge_templates", f"{mode}.txt").read_text()


def neutralise(text: str) -> str:
    """Break the template's fence tags inside judged text: "</response>" becomes "&lt;/response>"."""
    return _FENCE.sub(lambda m: "&lt;" + m.group(1) + ">", text)


def render(template: str, **fields) -> str:
    """Fill {prompt}/{completion}/{a}/{b}/{max_score} in one pass; judged text is neutralised and never re-scanned."""
    safe = {k: v if k == "max_score" else neutralise(str(v)) for k, v in fields.items()}
    return _FIELDS.sub(lambda m: str(safe.get(m.group(1), m.group(0))), template)


def judge_format(llm_cfg) -> PromptFormat:
    """How a judge prompt becomes the judge model's input (no system prompt or few-shot of the task's own)."""
    return PromptFormat(chat=llm_cfg.chat_template)


def verdict(score: int) -> str:
    return f"Score: {score}"


def eft_alphabet(llm_cfg) -> str:
    """Characters a from-scratch character tokenizer needs to read judge prompts and write verdicts."""
    return load_template(llm_cfg.template, "pointwise") + verdict(llm_cfg.max_score) + "0123456789\n"


def eft_rows(task, seed_rows: list[dict], llm_cfg, n: int, rng) -> list[dict]:
    """n judging rows (half with the seed answer, half with a corrupted one, in random order), flagged ``eft`` so
    training encodes their prompts with ``judge_format``."""
    if not task.corrupts:
        raise ConfigError([f"judge.llm.eft_share: task {task.name!r} cannot build a wrong answer. Set it to 0."])
    template = load_template(llm_cfg.template, "pointwise")
    out = []
    for j, i in enumerate(rng.integers(0, len(seed_rows), n)):
        row, good = seed_rows[i], j % 2 == 0
        answer = row["completion"] if good else task.corrupt(rng, row["completion"])
        out.append(
            {
                "prompt": render(template, prompt=row["prompt"], completion=answer, max_score=llm_cfg.max_score),
                "completion": verdict(llm_cfg.max_score if good else 0),
                "prompt_id": f"eft-{row['prompt_id']}-{int(good)}",
                "round": 0,
                "eft": True,
            }
        )
    return [out[i] for i in rng.permutation(len(out))]
