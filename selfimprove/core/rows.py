"""Rows on disk: a list of dicts as a `datasets` folder, and back, checked against its stage's DONE record."""

from __future__ import annotations

from pathlib import Path

from selfimprove.core.integrity import check_sizes


def save_rows(rows: list[dict], path: str | Path) -> None:
    """Save rows as a `datasets` dataset folder."""
    from datasets import Dataset

    if not rows:  # `datasets` writes no Arrow file for zero rows and cannot reload it, so mark emptiness
        Path(path).mkdir(parents=True)
        (Path(path) / "EMPTY").write_text("0 rows\n")
        return
    Dataset.from_list(rows).save_to_disk(str(path))


def load_rows(path: str | Path, columns: tuple[str, ...] = ()) -> list[dict]:
    """The rows of a saved dataset folder, after checking its files' sizes against its stage's DONE record; with
    ``columns``, only those of them the dataset has (the others are never read)."""
    from datasets import load_from_disk

    check_sizes(Path(path))
    if (Path(path) / "EMPTY").exists():
        return []
    ds = load_from_disk(str(path))
    if columns:
        ds = ds.select_columns([c for c in columns if c in ds.column_names])
    return ds.to_list()


def by_prompt(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped by prompt_id, in first-seen order (a prompt's samples, in their order)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["prompt_id"], []).append(r)
    return groups
