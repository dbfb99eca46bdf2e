"""A study's declared tests, applied the same way every time: each contrast's paired difference over seeds, its t
interval and p, the exact sign-flip p, Holm's adjustment over all the study's contrasts, the arms' match on the
compute ledger, and one verdict word by ``stats.VERDICT_RULE`` (``unmatched`` where the two arms did not share what
the study declared they must).
"""

from __future__ import annotations

from selfimprove.tools.stats import holm, paired_difference, verdict
from selfimprove.tools.study_file import Study


def compared_round(per_run: dict, wanted: int) -> int | None:
    """The round a contrast compares: ``wanted``, or (-1) the last round every run reached."""
    if wanted >= 0:
        return wanted
    lasts = [max(m) for m in per_run.values() if m]
    return min(lasts) if lasts else None


def match_problems(study: Study, per_run: dict, arms: tuple[str, str], k: int | None) -> list[str]:
    """Why the two arms are not matched as the study declares (empty: matched), seed by seed."""
    out = []
    for quantity, tolerance in study.match:
        for s in study.seeds:
            values = [per_run[(a, s)].get(k, {}).get(quantity) for a in arms]
            if any(v is None for v in values):
                out.append(f"{quantity} not recorded for seed {s} ({' / '.join(map(str, values))})")
                continue
            top = max(abs(v) for v in values)
            spread = (max(values) - min(values)) / top if top else 0.0
            if spread > tolerance:
                shown = ", ".join(f"{a} {v:.6g}" for a, v in zip(arms, values))
                out.append(f"{quantity} differs by {spread:.1%} > {tolerance:.1%} at seed {s} ({shown})")
    return out


def contrasts(study: Study, per_run: dict) -> list[dict]:
    """Every declared contrast with its statistics, Holm-adjusted p and verdict."""
    out = []
    for c in study.contrasts:
        k = compared_round(per_run, c.round)
        a = [per_run[(c.vs, s)].get(k, {}).get(c.metric) for s in study.seeds]
        b = [per_run[(c.arm, s)].get(k, {}).get(c.metric) for s in study.seeds]
        d = paired_difference(a, b)
        missing = [s for s, x, y in zip(study.seeds, a, b) if x is None or y is None]
        out.append(
            {
                "arm": c.arm,
                "vs": c.vs,
                "metric": c.metric,
                "round": k,
                "expect": c.expect,
                "a": a,
                "b": b,
                **d,
                "missing_seeds": missing,
                "unmatched": match_problems(study, per_run, (c.vs, c.arm), k),
            }
        )
    for row, p in zip(out, holm([row["p_value"] for row in out])):
        row["holm_p"] = p
        row["verdict"] = "unmatched" if row["unmatched"] else verdict(row, p, row["expect"])
    return out
