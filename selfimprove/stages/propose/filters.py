"""The propose stage's filters, in order: valid (the task parses it and, for built-in tasks, its solver solves it),
novel (not the eval or dev sets' prompts: decontamination; not any earlier round's prompt nor another proposal of
this round), learnable (the policy's pass rate, or label-free vote agreement, strictly between the recipe's bounds).
Each takes the candidates still standing and returns, in order, "" (passes) or the reason it fails."""

from __future__ import annotations

from collections import Counter

import numpy as np

from selfimprove.core.config import ProposeConfig
from selfimprove.core.prompts import prompt_key
from selfimprove.metrics import dedup


def valid(task, texts: list[str], finished: list[bool]) -> tuple[list[dict | None], list[str]]:
    """(prompt row or None, reason) per proposal: unfinished ones are cut off, the rest the task judges."""
    rows, reasons = [], []
    for text, done in zip(texts, finished):
        row, why = task.proposed_row(text) if done else (None, "unfinished")
        rows.append(row)
        reasons.append(why)
    return rows, reasons


def _similar(cands: list[str], prior: list[str], cfg: ProposeConfig, unit: str, embedder, within: bool) -> list[str]:
    """'' or 'duplicate' / 'near_duplicate' for each candidate, against ``prior`` and, ``within``, the candidates
    before it."""
    out, seen = [], {prompt_key(t) for t in prior}
    for t in cands:  # exact first, under every method
        out.append("duplicate" if prompt_key(t) in seen else "")
        if within:
            seen.add(prompt_key(t))
    rest = [i for i, why in enumerate(out) if not why]
    if cfg.novelty == "minhash":
        texts, seen_rows = dedup.prompt_rows([cands[i] for i in rest]), dedup.prompt_rows(prior)
        near = dedup.minhash(texts, seen_rows, cfg.novelty_threshold, cfg.minhash_ngram, unit, 128, within)
    elif cfg.novelty == "embedding" and rest:
        X = embedder.encode([cands[i] for i in rest] + prior, normalize_embeddings=True, convert_to_numpy=True)
        near = dedup.embedding(X[: len(rest)], X[len(rest) :], cfg.novelty_threshold, within)
    else:
        near = [None] * len(rest)
    for i, why in zip(rest, near):
        out[i] = why or ""
    return out


def novel(
    cands: list[str], protected: list[str], earlier: list[str], cfg: ProposeConfig, unit: str, embedder=None
) -> list[str]:
    """'contaminated' (like an eval or dev prompt), 'not_novel' (like an earlier round's prompt or an earlier
    candidate of this round), or ''."""
    reasons = ["contaminated" if why else "" for why in _similar(cands, protected, cfg, unit, embedder, False)]
    rest = [i for i, why in enumerate(reasons) if not why]
    for i, why in zip(rest, _similar([cands[i] for i in rest], earlier, cfg, unit, embedder, True)):
        reasons[i] = "not_novel" if why else ""
    return reasons


def pass_rates(task, rows: list[dict], samples: list[list[dict]], kind: str) -> np.ndarray:
    """Per proposal: the share of the policy's samples the task's checker accepts against its reference
    ('pass_rate'), or the share agreeing with the most common answer, no answer counting as disagreeing
    ('agreement', label-free; 'auto' picks it where a row has no reference)."""
    out = []
    for row, ss in zip(rows, samples):
        if kind == "pass_rate" or (kind == "auto" and row["reference"]):
            out.append(np.mean([task.is_correct(s["completion"], row["reference"]) for s in ss]))
            continue
        answers = [task.answer(s["completion"]) for s in ss]
        top = Counter(a for a in answers if a is not None).most_common(1)
        out.append(top[0][1] / len(ss) if top else 0.0)
    return np.asarray(out, dtype=np.float64)


def learnable(rates: np.ndarray, lo: float, hi: float) -> list[str]:
    """'too_hard' at or below ``lo``, 'too_easy' at or above ``hi``, else '' (strictly between: kept)."""
    return ["too_hard" if r <= lo else "too_easy" if r >= hi else "" for r in rates]
