"""What a preflight found: problems (each with its fix), facts, example prompts and the per-round plan."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    plan: list[dict] = field(default_factory=list)


def print_report(report: Report) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 120))
    for fact in report.facts:
        console.print(f"[green]ok[/green]  {fact}", highlight=False, markup=True)
    for i, text in enumerate(report.examples):
        console.rule(f"example prompt {i + 1}, exactly as the policy sees it")
        console.print(text, markup=False, highlight=False)
    if report.plan:
        table = Table(title="plan per round (upper bounds where generation lengths are not known yet)")
        for col in (
            "round",
            "prompts",
            "samples",
            "judge calls",
            "steps",
            "rows",
            "train tok<=",
            "gen tok<=",
            "eval",
            "MB",
        ):
            table.add_column(col, justify="right")
        for p in report.plan:
            calls = ", ".join(f"{k} {v}" for k, v in p["judge_calls"].items()) or "-"
            table.add_row(
                *map(
                    str,
                    (
                        p["round"],
                        p["prompts"],
                        p["samples"],
                        calls,
                        p["train_steps"],
                        p["train_rows"],
                        p["train_tokens_max"],
                        p["generated_tokens_max"],
                        p["eval_prompts"],
                        p["disk_mb"],
                    ),
                )
            )
        console.print(table)
    for problem in report.problems:
        console.print(f"[red]problem[/red]  {problem}", highlight=False)
    console.print("[red]not ready[/red]" if report.problems else "[green]ready[/green]: selfimprove run would start")
