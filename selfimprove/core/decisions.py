"""What a decision of the loop may read: the one rule, in one place.

Decisions are alarms of every action (warn, stop, steer, rollback), curricula, and anything else that chooses what
the loop does next from earlier rounds' metrics (``RunContext.history``). They may read label-free metrics, judge
outputs, the dev split and the probe set (a held-out draw of its own), never a number scored against an eval-set
answer: those are the ``eval/...`` keys, and ``history`` hands decisions the metrics without them.
"""

from __future__ import annotations

EVAL_SCORED = "eval/"  # every metric computed against an eval-set reference answer, and only those


def eval_scored(key: str) -> bool:
    return key.startswith(EVAL_SCORED)


def readable(metrics: dict) -> dict:
    """A round's metrics as a decision may read them: the eval-scored ones left out."""
    return {k: v for k, v in metrics.items() if not eval_scored(k)}


def refusal(field: str, metric: str) -> str | None:
    """Why a decision named by ``field`` may not watch ``metric``, or None when it may."""
    if not eval_scored(metric):
        return None
    return (
        f"{field}={metric!r}: a decision of the loop would read a metric scored against the eval sets' answers, so "
        "the test answers would steer training. Use the dev split (dev/..., e.g. task.addition.dev_size_per_digit) "
        "or a metric of the probe set, the data or the judges (quality/probe/..., diversity/..., quality/...)."
    )
