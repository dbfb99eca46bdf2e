"""The prompt side of a round, measured as its answers are: how diverse the round's prompts are, how many are new
against every earlier round's, how hard and how long they are, and, where a propose stage wrote some of them, how
its candidates fared in its filters (the learnability mix)."""

from __future__ import annotations

import numpy as np

from selfimprove.core.config import MonitorConfig
from selfimprove.core.prompts import is_proposed, prompt_key
from selfimprove.metrics import dedup
from selfimprove.metrics.diversity import lexical_suite, subsample
from selfimprove.metrics.vendi import ngram_vendi


def novelty(texts: list[str], earlier: list[str], threshold: float, n: int, unit: str) -> dict:
    """novelty: the share of prompts no earlier round posed (exact, as prompt_key compares); near_novelty: the share
    not within MinHash Jaccard ``threshold`` of an earlier one. 1.0 when there is no earlier round."""
    if not texts:
        return {"novelty": 0.0, "near_novelty": 0.0}
    seen = {prompt_key(t) for t in earlier}
    exact = float(np.mean([prompt_key(t) not in seen for t in texts]))
    if not earlier:
        return {"novelty": exact, "near_novelty": exact}
    # Against the earlier rounds only: a repeat inside this round is not "not new".
    rows, prior = dedup.prompt_rows(texts), dedup.prompt_rows(earlier)
    near = [why is None for why in dedup.minhash(rows, prior, threshold, n, unit, 128, within=False)]
    return {"novelty": exact, "near_novelty": float(np.mean(near))}


def prompt_metrics(
    rows: list[dict], texts: list[str], earlier: list[str], cfg: MonitorConfig, vendi_samples: int
) -> dict:
    """prompts/...: count, proposed share, lexical diversity and n-gram Vendi of the distinct prompt texts, novelty,
    mean difficulty and length (``rows``: one per distinct prompt, ``texts`` their own text, ``cfg`` the monitor's
    section for unit and orders)."""
    out = {"prompts/count": len(rows)}
    out["prompts/proposed_share"] = float(np.mean([is_proposed(r) for r in rows])) if rows else 0.0
    out.update({f"prompts/{k}": v for k, v in lexical_suite(texts, cfg.distinct_n, cfg.unit).items()})
    out["prompts/ngram_vendi"] = ngram_vendi(subsample(texts, vendi_samples), unit=cfg.unit)
    out.update({f"prompts/{k}": v for k, v in novelty(texts, earlier, 0.9, 3, cfg.unit).items()})
    out["prompts/difficulty"] = float(np.mean([r["difficulty"] for r in rows])) if rows else 0.0
    out["prompts/length"] = (
        float(np.mean([len(t if cfg.unit == "char" else t.split()) for t in texts])) if texts else 0.0
    )
    return out


def propose_mix(meta: dict, kept: list[dict]) -> dict:
    """prompts/propose/...: the share of the round's candidates each filter dropped (or kept), the kept ones' mean
    pass rate under the policy, and how many the pool used."""
    total = max(meta["candidates"], 1)
    reasons = {**dict.fromkeys(("kept", "unfinished", "contaminated", "not_novel", "too_easy", "too_hard"), 0)}
    reasons.update(meta["reasons"])
    out = {f"prompts/propose/{why}": n / total for why, n in reasons.items()}
    out["prompts/propose/candidates"] = meta["candidates"]
    out["prompts/propose/used"] = meta["used"]
    rates = [r["pass_rate"] for r in kept if r["pass_rate"] >= 0]
    out["prompts/propose/pass_rate"] = float(np.mean(rates)) if rates else -1.0
    return out
