"""Complexity of samples: length in tokens, task difficulty, and IFD under a policy.

IFD (instruction-following difficulty, Li et al. 2308.12032) = s(A|Q) / s(A), s = mean token cross-entropy of the
answer (completion + EOS) with and without the prompt. IFD > 1: the prompt does not help predict the answer; low IFD:
the answer is easy given the prompt. "Without the prompt" means after the tokenizer's own prefix for an empty text
(the BOS token where it has one); without any prefix the first answer token cannot be scored, so it is left out of
both losses to keep them comparable.
"""

from __future__ import annotations

import numpy as np

from selfimprove.core import timing
from selfimprove.core.prompts import PromptFormat, encode_completions


def answer_batches(
    prefixes: list[list[int]], answers: list[list[int]], pad: int, batch_size: int, skip_first: bool = False
):
    """Right-padded batches of prefix + answer token ids, shortest first (less padding). Yields (idx, ids, attn,
    scored): ``idx`` the rows' positions in the inputs, ``scored[r, t]`` True for the answer tokens the model predicts
    (all of them, or all but the first with ``skip_first``; token 0 never, it has no context)."""
    import torch

    order = np.argsort([len(p) + len(a) for p, a in zip(prefixes, answers)], kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        seqs = [prefixes[i] + answers[i] for i in idx]
        ids = torch.full((len(idx), max(map(len, seqs))), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        scored = torch.zeros_like(ids, dtype=torch.bool)
        for row, i in enumerate(idx):
            seq = seqs[row]
            ids[row, : len(seq)] = torch.tensor(seq)
            attn[row, : len(seq)] = 1
            scored[row, max(len(prefixes[i]) + int(skip_first), 1) : len(seq)] = True
        yield idx, ids, attn, scored


def _answer_losses(
    model, prefixes: list[list[int]], answers: list[list[int]], skip_first: bool, batch_size: int
) -> np.ndarray:
    """Mean cross-entropy of each answer after its prefix."""
    import torch

    losses = np.zeros(len(answers))
    for idx, ids, attn, scored in answer_batches(
        prefixes, answers, model.config.pad_token_id or 0, batch_size, skip_first
    ):
        with torch.no_grad(), timing.compute():
            logits = model(input_ids=ids, attention_mask=attn).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        mask = scored[:, 1:]  # logits at t predict token t + 1
        losses[idx] = (-(logp * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy()
    return losses


def ifd_scores(
    model, tokenizer, prompts: list[str], completions: list[str], batch_size: int = 64, fmt=None
) -> np.ndarray:
    """IFD of each (prompt, completion) pair under ``model``, the prompt encoded by ``fmt`` (selfimprove.core.prompts)
    as the policy saw it; 1 where nothing is scored (0/0)."""
    if not prompts:
        return np.zeros(0)
    answers = encode_completions(tokenizer, completions)
    with_prompt = (fmt or PromptFormat()).encode(tokenizer, prompts)
    empty = tokenizer("")["input_ids"]
    skip_first = not empty  # no BOS: the first answer token has no context in the unconditional pass
    model.eval()
    cond = _answer_losses(model, with_prompt, answers, skip_first, batch_size)
    uncond = _answer_losses(model, [empty] * len(answers), answers, skip_first, batch_size)
    return np.where(uncond > 0, cond / np.where(uncond > 0, uncond, 1.0), 1.0)


def complexity_metrics(rows: list[dict], ifd: np.ndarray | None = None) -> dict:
    """length_tokens (mean generated tokens), difficulty (mean level), and, when given, mean IFD and the share of
    samples with IFD > 1 (those Li et al. drop)."""
    out = {
        "length_tokens": float(np.mean([r["num_tokens"] for r in rows])) if rows else 0.0,
        "difficulty": float(np.mean([r["difficulty"] for r in rows])) if rows else 0.0,
    }
    if ifd is not None:
        out["ifd"] = float(ifd.mean()) if len(ifd) else 0.0
        out["ifd_above_1"] = float((ifd > 1).mean()) if len(ifd) else 0.0
    return out
