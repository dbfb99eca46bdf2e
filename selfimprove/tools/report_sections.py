"""The HTML sections of ``selfimprove report`` that are tables, not plots: the last round's samples (or an online
round's rollouts), the compute ledger, the recipe history, the environment, and the recipe as the run used it."""

from __future__ import annotations

import html
from pathlib import Path

import yaml

from selfimprove.core.atomic import is_done
from selfimprove.core.environment import differences, environments
from selfimprove.core.rows import load_rows
from selfimprove.core.runs import history
from selfimprove.metrics.ledger import COUNTS


def _table(title: str, rows: list[dict], why) -> str:
    cells = "".join(
        f"<tr><td><code>{html.escape(r['prompt'])}</code></td><td><code>{html.escape(r['completion'])}</code></td>"
        f"<td>{r['score']:.3f}</td><td>{html.escape(why(r))}</td></tr>"
        for r in rows
    )
    head = "<tr><th>prompt</th><th>completion</th><th>score</th><th>why</th></tr>"
    return f"<h4>{title}</h4><table>{head}{cells}</table>"


def sample_tables(run: Path, rows: list[dict], n: int = 8) -> str:
    """The last round's first selected samples and first rejected ones, with why; for an online (GRPO) round its
    rollouts with the highest and the lowest advantage."""
    last = max((r["round"] for r in rows if "quality/generated" in r), default=None)
    if last is None:
        return "<p>No self-improvement round yet.</p>"
    stage = run / f"round_{last:02d}"
    out = [f"<h3>Round {last} samples</h3>"]
    rollouts = stage / "train" / "rollouts"
    if rollouts.exists():
        ranked = sorted(load_rows(rollouts), key=lambda r: -r["advantage"])
        why = lambda r: f"advantage {r['advantage']:+.3f} at step {r['step']}"  # noqa: E731
        out += [_table("highest advantage", ranked[:n], why), _table("lowest advantage", ranked[-n:], why)]
        return "".join(out)
    for title, path, keep, reason in (
        ("selected", stage / "select" / "data", True, "select_reason"),
        ("rejected by the filter", stage / "filter" / "data", False, "filter_reason"),
    ):
        if is_done(path.parent):
            picked = [r for r in load_rows(path) if bool(r.get("selected", r.get("kept"))) == keep][:n]
            out.append(_table(title, picked, lambda r, reason=reason: str(r[reason])))
    return "".join(out)


def compute_section(metrics: dict[str, list[dict]]) -> str:
    """The compute ledger (selfimprove.metrics.ledger): per round and in total for each run, so arms can be compared
    on what they spent."""
    blocks = []
    for name, rows in metrics.items():
        if not any("compute/total/train_rows" in r for r in rows):
            continue  # a run from before the ledger
        cols = [*COUNTS, "padding_share"]
        head = "".join(f"<th>{html.escape(c)}</th>" for c in ["round", *cols, "model s"])
        cell = lambda v: f"<td>{v:.4g}</td>" if isinstance(v, (int, float)) else "<td>-</td>"  # noqa: E731
        body = "".join(
            f"<tr><td>{r['round']}</td>"
            + "".join(cell(r.get(f"compute/{c}")) for c in cols)
            + cell(r.get("time/compute_s"))
            + "</tr>"
            for r in rows
        )
        last = rows[-1]
        body += (
            "<tr><td><b>total</b></td>"
            + "".join(cell(last.get(f"compute/total/{c}")) for c in cols)
            + cell(sum(r.get("time/compute_s", 0.0) for r in rows))
            + "</tr>"
        )
        blocks.append(f"<h3>{html.escape(name)}</h3><table><tr>{head}</tr>{body}</table>")
    return "<h2>Compute</h2>" + "".join(blocks) if blocks else ""


def recipe_history(run: Path, rows: list[dict]) -> str:
    """Which recipe each round ran under (recipes/history.json), with what changed at each switch."""
    entries = history(run)
    if not entries:
        return ""
    rounds = {h["hash"]: [r["round"] for r in rows if r.get("recipe") == h["hash"]] for h in entries}
    cells = "".join(
        f"<tr><td>{h['index']}</td><td><code>{h['hash']}</code></td><td>{h['from_round']}</td>"
        f"<td>{', '.join(map(str, rounds[h['hash']])) or '-'}</td>"
        f"<td>{html.escape('; '.join(h['changes'])) or 'the starting recipe'}</td></tr>"
        for h in entries
    )
    return (
        "<h3>Recipe history</h3><table><tr><th>#</th><th>hash</th><th>from round</th><th>rounds run under it</th>"
        f"<th>changes</th></tr>{cells}</table>"
    )


def environment_section(runs: dict[str, Path]) -> str:
    """What each run ran on (environment.json), and a warning where overlaid runs differ in it."""
    rows, latest = [], {}
    for name, path in runs.items():
        for e in environments(path):
            latest[name] = e
            pkgs = ", ".join(f"{k} {v}" for k, v in e.get("packages", {}).items() if v)
            rows.append(
                f"<tr><td>{html.escape(name)}</td><td>{e.get('from_round')}</td><td><code>{html.escape(str(e.get('selfimprove_commit')))}</code></td>"
                f"<td>{html.escape(str(e.get('python')))}</td><td>{html.escape(pkgs)}</td><td>{html.escape(str(e.get('cpu')))}</td>"
                f"<td>{html.escape(', '.join(e.get('gpu') or []) or '-')}</td><td>{e.get('torch_threads')}</td></tr>"
            )
    if not rows:
        return ""
    names = list(latest)
    warn = [
        f"{a} vs {b}: {d}"
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        for d in differences(latest[a], latest[b])
    ]
    warn += [
        f"{n}: resumed in another environment at round {e['from_round']}"
        for n, p in runs.items()
        for e in environments(p)[1:]
    ]
    note = "".join(f'<p class="warn">warning: {html.escape(w)}</p>' for w in warn)
    return (
        "<h2>Environment</h2>" + note + "<table><tr><th>run</th><th>from round</th><th>selfimprove</th><th>python</th>"
        "<th>packages</th><th>CPU</th><th>GPU</th><th>torch threads</th></tr>" + "".join(rows) + "</table>"
    )


def used_config(path: Path) -> str:
    """A run's recipe.yaml without what it does not use: the other tasks' sections, the backends and judges it does
    not run, the propose and slurm sections when off."""
    data = yaml.safe_load(path.read_text()) or {}
    task, judges = data.get("task", {}), data.get("judge", {}).get("judges", [])
    if "name" in task:
        data["task"] = {"name": task["name"], task["name"]: task.get(task["name"], {})}
    for section in ("generate", "propose"):
        backend = data.get(section, {}).get("backend", "hf") if section == "generate" else "hf"
        for name in ("vllm", "openai"):
            if backend != name:
                data.get(section, {}).pop(name, None)
    llm = data.get("judge", {}).get("llm", {})
    for name in ("vllm", "openai"):
        if llm.get("backend") != name:
            llm.pop(name, None)
    if not {"llm", "llm_pairwise"} & set(judges):
        data.get("judge", {}).pop("llm", None)
    if "reward" not in judges:
        data.get("judge", {}).pop("reward_model", None)
    if data.get("propose", {}).get("mode", "off") == "off":
        data["propose"] = {"mode": "off"}
    if data.get("train", {}).get("launcher") != "slurm":
        data.pop("slurm", None)
    if data.get("train", {}).get("method") != "dpo":
        data.get("train", {}).pop("dpo", None)
    return yaml.safe_dump(data, sort_keys=False)
