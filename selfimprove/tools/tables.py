"""Tables on the console that read the same on a terminal and in a file: on a terminal, rich tables whose cells wrap
(a name is never cut) with bold for emphasis; piped or logged, GitHub Markdown, where ``**bold**`` keeps its meaning
without colour and nothing depends on the width of a terminal."""

from __future__ import annotations

import re
import sys

BOLD = re.compile(r"\*\*(.+?)\*\*")


def markdown_table(head: list[str], rows: list[list[str]]) -> list[str]:
    """The rows as Markdown lines; a '|' inside a cell is escaped."""
    cell = lambda x: str(x).replace("|", "\\|")  # noqa: E731
    return [
        "| " + " | ".join(map(cell, head)) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(map(cell, r)) + " |" for r in rows),
    ]


def show_table(title: str, head: list[str], rows: list[list[str]], file=None) -> None:
    """Print a titled table: rich on a terminal (cells wrap, **x** bold), Markdown otherwise."""
    file = file or sys.stdout
    if not file.isatty():
        print("\n".join([title, "", *markdown_table(head, rows), ""]), file=file)
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    for i, name in enumerate(head):
        table.add_column(name, overflow="fold", justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*(BOLD.sub(r"[bold]\1[/bold]", escape(str(x))) for x in r))
    Console(file=file).print(table)
