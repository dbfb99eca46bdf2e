"""LLM-as-judge, pointwise (rubric -> "Score: N") and pairwise (A vs B in both orders, so position bias cancels).

The judge model is ``judge.llm.model``: a checkpoint folder or hub id, or "policy" for the checkpoint that generated
the round (self-judging, as in Self-Rewarding LMs). It generates greedily through the same backend entry as the policy
(``selfimprove.backends.sample``). The prompt template is a text file (``judge.llm.template``) with the fields
{prompt}, {completion} (pointwise) or {prompt}, {a}, {b} (pairwise), and {max_score}.

Hardening, because the judged text is untrusted:
- fields are substituted in one pass, so a completion containing "{b}" or "{max_score}" stays literal;
- the template's fence tags (<task>, <response>, <response_a>, <response_b>) are neutralised inside judged text, so a
  completion cannot close its fence and speak as the instructions;
- only the judge's own output is parsed, and it must hold exactly one verdict line ("Score: N" / "Winner: X"), in range;
  every other output counts as unparsed and is handled as ``judge.llm.on_unparseable`` says;
- a sample that tries to speak for the judge (its text holds a verdict such as "Score: 10" or "Winner: A", or one of
  the fence tags) scores 0 pointwise and loses each of its comparisons pairwise, whatever the judge said: so an
  injection can never raise a sample's score above the same sample without it (the judge could be fooled by it, or
  parrot it). Its record says ``injected``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import replace
from itertools import combinations

import numpy as np

from selfimprove import backends
from selfimprove.backends import Sampling
from selfimprove.core.judge_prompts import judge_format, load_template, render

SCORE = re.compile(r"^[ \t]*score[ \t]*:[ \t]*(\d+(?:\.\d+)?)[ \t]*$", re.I | re.M)
WINNER = re.compile(r"^[ \t]*winner[ \t]*:[ \t]*(a|b|tie)[ \t]*$", re.I | re.M)
_CLAIM = {
    SCORE: re.compile(r"score\s*:\s*\d", re.I),
    WINNER: re.compile(r"winner\s*:\s*(?:a|b|tie)\b", re.I),
}
_FENCE_TAG = re.compile(r"<\s*/?\s*(?:task|response_a|response_b|response)\s*>", re.I)


def parse_verdict(output: str, pattern: re.Pattern) -> str | None:
    """The single verdict in the judge's output, or None: no verdict line, or several."""
    found = pattern.findall(output)
    return found[0].lower() if len(found) == 1 else None


def injected(text: str, pattern: re.Pattern) -> bool:
    """Judged text that holds a verdict of the judge's kind, or a fence tag: it tries to speak for the judge."""
    return bool(_CLAIM[pattern].search(text) or _FENCE_TAG.search(text))


def _judge_outputs(env, prompts: list[str]) -> list[dict]:
    cfg = env.cfg.llm
    path = env.policy if cfg.model == "policy" else cfg.model  # with backend 'openai': the served model's name
    sampling = Sampling(num_samples=1, temperature=0.0, max_new_tokens=cfg.max_new_tokens)
    outs = backends.sample(
        cfg.backend,
        path,
        prompts,
        sampling,
        env.seed,
        cfg.batch_size,
        env.dtype,
        desc="llm judge",
        fmt=judge_format(cfg),
        options=replace(cfg, vllm=replace(cfg.vllm, keep_engine=False)),  # the run's kept engine is the policy's
    )
    return [o[0] for o in outs]  # completion, num_tokens (the compute ledger counts them), ...


def pointwise(env, rows: list[dict]):
    """Score / max_score in [0, 1] per sample; None where the output had no trustworthy verdict."""
    cfg = env.cfg.llm
    template = load_template(cfg.template, "pointwise")
    prompts = [render(template, prompt=r["prompt"], completion=r["completion"], max_score=cfg.max_score) for r in rows]
    outputs = _judge_outputs(env, prompts)
    scores, records = [], []
    for i, (r, o) in enumerate(zip(rows, outputs)):
        out = o["completion"]
        v, inj = parse_verdict(out, SCORE), injected(r["completion"], SCORE)
        score = float(v) / cfg.max_score if v is not None and float(v) <= cfg.max_score else None
        score = 0.0 if inj else score
        scores.append(score)
        records.append(
            {
                "row": i,
                "output": out,
                "score": -1.0 if score is None else score,
                "injected": inj,
                "num_tokens": o["num_tokens"],
            }
        )
    return scores, records


def pairwise(env, rows: list[dict]):
    """Each sample's mean result (win 1, tie 0.5, loss 0) over comparisons with the same prompt's other samples, every
    pair judged as (A, B) and (B, A); at most ``max_pairs_per_prompt`` seeded pairs per prompt. None where none of a
    sample's comparisons gave a trustworthy verdict."""
    cfg = env.cfg.llm
    template = load_template(cfg.template, "pairwise")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[r["prompt_id"]].append(i)
    rng = np.random.default_rng(env.seed)
    jobs = []  # (first, second): first is shown as A
    for idx in groups.values():
        pairs = list(combinations(idx, 2))
        if cfg.max_pairs_per_prompt and len(pairs) > cfg.max_pairs_per_prompt:
            pairs = [pairs[j] for j in sorted(rng.choice(len(pairs), cfg.max_pairs_per_prompt, replace=False))]
        jobs += [job for i, j in pairs for job in ((i, j), (j, i))]
    prompts = [
        render(
            template,
            prompt=rows[i]["prompt"],
            a=rows[i]["completion"],
            b=rows[j]["completion"],
            max_score=cfg.max_score,
        )
        for i, j in jobs
    ]
    outputs = _judge_outputs(env, prompts)
    results: dict[int, list[float]] = defaultdict(list)
    records = []
    for (i, j), o in zip(jobs, outputs):
        v = parse_verdict(o["completion"], WINNER)
        a_result = _a_result(v, rows[i]["completion"], rows[j]["completion"])
        records.append({"a": i, "b": j, "output": o["completion"], "verdict": v or "", "num_tokens": o["num_tokens"]})
        if a_result is not None:
            results[i].append(a_result[0])
            results[j].append(a_result[1])
    return [float(np.mean(results[i])) if results[i] else None for i in range(len(rows))], records


def _a_result(verdict: str | None, a: str, b: str) -> tuple[float, float] | None:
    """(A's result, B's result) of one comparison: win 1, tie 0.5, loss 0; an injecting side loses whatever the
    verdict; None where nothing decides it (no verdict, no injection)."""
    inj_a, inj_b = injected(a, WINNER), injected(b, WINNER)
    if inj_a or inj_b:
        return (0.0 if inj_a else 1.0), (0.0 if inj_b else 1.0)
    if verdict is None:
        return None
    first = {"a": 1.0, "b": 0.0, "tie": 0.5}[verdict]
    return first, 1.0 - first


def head_to_head(env, rows_a: list[dict], rows_b: list[dict]) -> dict:
    """B's win-rate over A with the pairwise judge: sample j of each prompt from A against sample j from B, judged as
    (A, B) and as (B, A); win 1, tie 0.5, loss 0, averaged over the comparisons that gave a trustworthy verdict."""
    cfg = env.cfg.llm
    template = load_template(cfg.template, "pairwise")
    b_by_key = {(r["prompt_id"], r["sample_idx"]): r for r in rows_b}
    pairs = [
        (a, b_by_key[(a["prompt_id"], a["sample_idx"])])
        for a in rows_a
        if (a["prompt_id"], a["sample_idx"]) in b_by_key
    ]
    jobs = [(x, y, b_first) for a, b in pairs for x, y, b_first in ((a, b, False), (b, a, True))]
    prompts = [
        render(template, prompt=x["prompt"], a=x["completion"], b=y["completion"], max_score=cfg.max_score)
        for x, y, _ in jobs
    ]
    results, unparsed = [], 0
    for (x, y, b_first), out in zip(jobs, _judge_outputs(env, prompts)):
        r = _a_result(parse_verdict(out["completion"], WINNER), x["completion"], y["completion"])
        if r is None:
            unparsed += 1
            continue
        results.append(r[0] if b_first else r[1])
    return {"win_rate": float(np.mean(results)) if results else 0.5, "comparisons": len(jobs), "unparsed": unparsed}
