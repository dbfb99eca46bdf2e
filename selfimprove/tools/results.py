"""The docs' verdict tables, generated from the committed results bundles (results/<study>/study.json).

A document marks where a study's tables go::

    <!-- verdicts: loop -->
    (generated: the declared contrasts of results/loop/study.json, with their verdicts)
    <!-- /verdicts: loop -->
    <!-- arms: loop -->
    (generated: every arm and reported metric at the final round, mean, per-seed values, paired difference)
    <!-- /arms: loop -->
    <!-- rounds: loop -->
    (generated: every arm and reported metric round by round, the mean over seeds)
    <!-- /rounds: loop -->

``render`` rewrites every marked block from its bundle; ``scripts/verdict_tables.py`` applies it to the docs (or,
with ``--check``, fails when a table and its bundle disagree, as a test does).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from selfimprove.tools.study import CONTRAST_HEAD, FINAL_HEAD, contrast_rows, final_rows, final_title, value_format

BLOCK = re.compile(r"(<!-- (verdicts|arms|rounds): ([\w.-]+) -->\n)(.*?)(<!-- /\2: \3 -->)", re.S)


def _source(result: dict, source: str) -> str:
    envs = {
        (
            e.get("cpu", "?"),
            e.get("python", "?"),
            e.get("packages", {}).get("torch", "?"),
            e.get("selfimprove_commit", "?")[:7],
        )
        for e in (r["environment"] for r in result["runs"].values())
    }
    return (
        f"Generated from `{source}` ({len(result['runs'])} runs, seeds {result['seeds']}; cpu / python / torch / "
        f"commit {', '.join(' / '.join(e) for e in sorted(envs))}) by `scripts/verdict_tables.py`; not edited by hand."
    )


def _markdown(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def table(result: dict, source: str) -> str:
    """The declared contrasts of one study as a Markdown table, with where they come from."""
    return "\n".join([*_markdown(CONTRAST_HEAD, contrast_rows(result)), "", _source(result, source)]) + "\n"


def arms_table(result: dict, source: str) -> str:
    """Every arm and reported metric at the final round (per-seed values beside every mean), with its source."""
    lines = [final_title(result), "", *_markdown(FINAL_HEAD, final_rows(result)), "", _source(result, source)]
    return "\n".join(lines) + "\n"


def rounds_table(result: dict, source: str) -> str:
    """Every arm's reported metrics round by round, each the mean over seeds (the per-seed values are in the
    bundle's study.csv), with its source."""
    ks = sorted({int(k) for by_round in result["arms"].values() for k in by_round})
    rows = []
    for arm, by_round in result["arms"].items():
        for metric in dict.fromkeys(m for k in ks for m in by_round.get(str(k), {})):
            f = value_format(metric)
            cells = [f(by_round.get(str(k), {}).get(metric, {}).get("mean")) for k in ks]
            rows.append([arm, metric + (" (%)" if metric.startswith("eval/accuracy") else ""), *cells])
    title = f"Mean over seeds {result['seeds']}, round by round (per-seed values: the bundle's study.csv)."
    lines = [title, "", *_markdown(["arm", "metric", *(f"round {k}" for k in ks)], rows), "", _source(result, source)]
    return "\n".join(lines) + "\n"


def render(text: str, results: Path) -> str:
    """``text`` with every marked block regenerated from ``results/<name>/study.json``."""

    def fill(m: re.Match) -> str:
        kind, name = m.group(2), m.group(3)
        path = results / name / "study.json"
        if not path.exists():
            raise FileNotFoundError(f"{kind} block '{name}' names no bundle: {path} is missing")
        make = {"verdicts": table, "arms": arms_table, "rounds": rounds_table}[kind]
        return m.group(1) + make(json.loads(path.read_text()), f"results/{name}/study.json") + m.group(5)

    return BLOCK.sub(fill, text)


def blocks(text: str) -> list[str]:
    return [m.group(3) for m in BLOCK.finditer(text)]
