"""Reward-model judge: any local (or hub) ``AutoModelForSequenceClassification`` folder, e.g. one trained with TRL's
``RewardTrainer``, scores prompt + completion in padded batches. The score is the model's raw scalar (num_labels 1),
or P(label 1) for a two-label classifier; thresholds in ``filter.min_scores`` are on that scale."""

from __future__ import annotations

from selfimprove.core import timing
from selfimprove.core.dist import gather_dict, my_batches
from selfimprove.core.errors import DataError


def _texts(tokenizer, rows: list[dict]) -> list[str]:
    """Chat-formatted conversation when the tokenizer has a chat template (as RewardTrainer trains on), else the raw
    prompt + completion the policy saw."""
    if getattr(tokenizer, "chat_template", None):
        return [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}],
                tokenize=False,
            )
            for r in rows
        ]
    return [r["prompt"] + r["completion"] for r in rows]


def _load(cfg):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg.path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(cfg.path, dtype=getattr(torch, cfg.dtype)).eval()
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id  # sequence classifiers find the last real token through it
    if model.config.num_labels not in (1, 2):
        raise DataError(
            f"judge.reward_model.path={cfg.path!r} has num_labels={model.config.num_labels}; a reward "
            "model has 1 (a scalar score) or 2 (P(label 1) is the score)."
        )
    return tok, model


def reward_model(env, rows: list[dict]) -> tuple[list[float], list[dict]]:
    import torch

    cfg = env.cfg.reward_model
    if "reward_model" not in env.cache:  # loaded once per env: a judge stage, or every step of a GRPO round
        env.cache["reward_model"] = _load(cfg)
    tok, model = env.cache["reward_model"]
    texts = _texts(tok, rows)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding
    scores: dict[int, float] = {}
    tokens: dict[int, int] = {}
    for _, start in my_batches(len(order), cfg.batch_size):  # under accelerate, each rank a share of the batches
        idx = order[start : start + cfg.batch_size]
        enc = tok(
            [texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True, max_length=cfg.max_length
        )
        with torch.inference_mode(), timing.compute():
            logits = model(**enc).logits.float()
        values = logits[:, 0] if logits.shape[1] == 1 else logits.softmax(-1)[:, 1]
        scores.update(zip(idx, values.tolist()))
        tokens.update(zip(idx, enc["attention_mask"].sum(-1).tolist()))
    scores, tokens = gather_dict(scores), gather_dict(tokens)
    # one record per call, with the tokens it read: the compute ledger's judge calls and tokens
    return [scores[i] for i in range(len(texts))], [{"row": i, "num_tokens": tokens[i]} for i in range(len(texts))]
