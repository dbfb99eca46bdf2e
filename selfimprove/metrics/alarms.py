"""Collapse alarms: rules over the per-round metrics, and the actions they trigger.

An alarm fires at round k when its condition held in each of the last ``rounds`` rounds:
- a metric: value < (1 - drop) x reference, the reference being round 0's value, the previous round's, or the
  first round's that reports the metric;
- 'wu_signature' (Wu et al. 2407.05013): on the probe set, pass@1 rose while the pass@k - pass@1 gap shrank.
A rule may watch for an absolute ``rise`` instead (value > reference + rise), e.g. a judge's score-minus-truth gap.
Fired alarms are written to round_k/monitor/alarms.json, so a resumed run stops, steers or rolls back exactly as the
first did. A 'rollback' round keeps its folders (the record of what happened) but its checkpoint and its accepted data
are passed over by every later round (RunContext.checkpoint, accepted_rows).
"""

from __future__ import annotations

import logging

from selfimprove.core.atomic import is_done
from selfimprove.core.files import read_json
from selfimprove.core.rundir import RunContext

logger = logging.getLogger(__name__)
GAP, PASS1 = "quality/probe/pass@k_minus_pass@1", "quality/probe/pass@1"


def _holds(alarm, history: list[dict], j: int) -> bool:
    """Whether the alarm's condition holds at round index j of ``history``."""
    now = history[j]
    if alarm.metric == "wu_signature":
        if j == 0 or GAP not in now or GAP not in history[j - 1]:
            return False
        return now[GAP] < history[j - 1][GAP] and now[PASS1] > history[j - 1][PASS1]
    ref = {
        "round0": history[0],
        "previous": history[j - 1] if j > 0 else None,
        # the first round that reports it: a judge's metrics start at round 1, since round 0 judges nothing
        "first": next((h for h in history[: j + 1] if alarm.metric in h), None),
    }[alarm.vs]
    if ref is None or alarm.metric not in now or alarm.metric not in ref:
        return False
    if alarm.rise:  # absolute: gaps and rates may sit at or below 0
        return now[alarm.metric] > ref[alarm.metric] + alarm.rise
    return ref[alarm.metric] > 0 and now[alarm.metric] < (1 - alarm.drop) * ref[alarm.metric]


def check_alarms(alarms, history: list[dict]) -> list[dict]:
    """Alarms firing at the last round of ``history`` (metrics of rounds 0..k, in order)."""
    fired = []
    last = len(history) - 1
    for alarm in alarms:
        window = range(last - alarm.rounds + 1, last + 1)
        if window.start < 0 or not all(_holds(alarm, history, j) for j in window):
            continue
        value = history[last].get(alarm.metric)
        if alarm.metric == "wu_signature":
            reason = "probe pass@1 rose while pass@k - pass@1 shrank"
        elif alarm.rise:
            reason = f"{alarm.metric}={value:.4g} rose more than {alarm.rise:g} above the {alarm.vs} value"
        else:
            reason = f"{alarm.metric}={value:.4g} fell more than {alarm.drop:.0%} below the {alarm.vs} value"
        steers = alarm.action in ("steer", "rollback")
        fired.append(
            {
                "metric": alarm.metric,
                "action": alarm.action,
                "rounds": alarm.rounds,
                "reason": reason,
                "steer_temperature": alarm.steer_temperature if steers else 0.0,
                "steer_diversity_weight": alarm.steer_diversity_weight if steers else 0.0,
                "max_rollbacks": alarm.max_rollbacks,
            }
        )
        logger.warning(
            "ALARM round %d (%s, sustained %d round(s)): %s", history[last]["round"], alarm.action, alarm.rounds, reason
        )
    return fired


def fired_alarms(ctx: RunContext, k: int) -> list[dict]:
    path = ctx.stage(k, "monitor") / "alarms.json"
    return read_json(path) if is_done(ctx.stage(k, "monitor")) and path.exists() else []


def steered_temperature(ctx: RunContext, k: int) -> float:
    """Round k's sampling temperature: the recipe's, plus every 'steer' alarm fired in earlier rounds."""
    return ctx.recipe.generate.temperature + sum(a["steer_temperature"] for j in range(k) for a in fired_alarms(ctx, j))


def steered_diversity_weight(ctx: RunContext, k: int) -> float:
    """Round k's select.diversity_weight: the recipe's, plus every 'steer' alarm fired in earlier rounds, at most 1."""
    extra = sum(a.get("steer_diversity_weight", 0.0) for j in range(k) for a in fired_alarms(ctx, j))
    return min(1.0, ctx.recipe.select.diversity_weight + extra)


def should_stop(ctx: RunContext, k: int) -> str:
    """Why the loop ends after round k ('' = it goes on): a 'stop' alarm, or a rollback past its max_rollbacks."""
    fired = fired_alarms(ctx, k)
    if any(a["action"] == "stop" for a in fired):
        return "a 'stop' alarm fired"
    limits = [a["max_rollbacks"] for a in fired if a["action"] == "rollback"]
    done = sum(ctx.rolled_back(j) for j in range(k + 1))
    if limits and done >= min(limits):
        return f"{done} round(s) rolled back, the alarm's max_rollbacks is {min(limits)}"
    return ""
