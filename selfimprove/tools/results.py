"""The docs' verdict tables, generated from the committed results bundles (results/<study>/study.json).

A document marks where a study's table goes::

    <!-- verdicts: loop -->
    (generated: the declared contrasts of results/loop/study.json, with their verdicts)
    <!-- /verdicts: loop -->

``render`` rewrites every marked block from its bundle; ``scripts/verdict_tables.py`` applies it to the docs (or,
with ``--check``, fails when a table and its bundle disagree, as a test does).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from selfimprove.tools.study import CONTRAST_HEAD, contrast_rows

BLOCK = re.compile(r"(<!-- verdicts: ([\w.-]+) -->\n)(.*?)(<!-- /verdicts: \2 -->)", re.S)


def table(result: dict, source: str) -> str:
    """The declared contrasts of one study as a Markdown table, with where they come from."""
    envs = {
        (
            e.get("cpu", "?"),
            e.get("python", "?"),
            e.get("packages", {}).get("torch", "?"),
            e.get("selfimprove_commit", "?")[:7],
        )
        for e in (r["environment"] for r in result["runs"].values())
    }
    lines = [
        "| " + " | ".join(CONTRAST_HEAD) + " |",
        "|" + "---|" * len(CONTRAST_HEAD),
        *("| " + " | ".join(r) + " |" for r in contrast_rows(result)),
        "",
        f"Generated from `{source}` ({len(result['runs'])} runs, seeds {result['seeds']}; cpu / python / torch / "
        f"commit {', '.join(' / '.join(e) for e in sorted(envs))}) by `scripts/verdict_tables.py`; not edited by hand.",
    ]
    return "\n".join(lines) + "\n"


def render(text: str, results: Path) -> str:
    """``text`` with every marked verdict block regenerated from ``results/<name>/study.json``."""

    def fill(m: re.Match) -> str:
        path = results / m.group(2) / "study.json"
        if not path.exists():
            raise FileNotFoundError(f"verdict block '{m.group(2)}' names no bundle: {path} is missing")
        return m.group(1) + table(json.loads(path.read_text()), f"results/{m.group(2)}/study.json") + m.group(4)

    return BLOCK.sub(fill, text)


def blocks(text: str) -> list[str]:
    return [m.group(2) for m in BLOCK.finditer(text)]
