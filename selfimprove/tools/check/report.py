"""What a preflight found: problems (each with its fix), facts, example prompts and the per-round plan."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from selfimprove.tools.tables import show_table


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    plan: list[dict] = field(default_factory=list)


def print_report(report: Report) -> None:
    from rich.console import Console

    console = Console(width=max(Console().width, 120))
    for fact in report.facts:
        console.print(f"[green]ok[/green]  {fact}", highlight=False, markup=True)
    for i, text in enumerate(report.examples):
        console.rule(f"example prompt {i + 1}, exactly as the policy sees it")
        console.print(text, markup=False, highlight=False)
    if report.plan:
        head = ["round", "prompts", "samples", "judge calls", "steps", "rows", "train tok<=", "gen tok<=", "eval", "MB"]
        keys = ("round", "prompts", "samples", "judge_calls", "train_steps", "train_rows", "train_tokens_max",
                "generated_tokens_max", "eval_prompts", "disk_mb")  # fmt: skip
        rows = [
            [
                ", ".join(f"{k} {v}" for k, v in p[key].items()) or "-" if key == "judge_calls" else str(p[key])
                for key in keys
            ]
            for p in report.plan
        ]
        sys.stdout.flush()
        show_table("plan per round (upper bounds where generation lengths are not known yet)", head, rows)
    for problem in report.problems:
        console.print(f"[red]problem[/red]  {problem}", highlight=False)
    console.print("[red]not ready[/red]" if report.problems else "[green]ready[/green]: selfimprove run would start")
