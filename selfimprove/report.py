"""``selfimprove report RUN_DIR [RUN_DIR ...]``: a self-contained HTML report (plus the PNG plots) of one run, or of
several overlaid. Plots are matplotlib PNGs, embedded as data URIs, so the page opens from disk with no server and no
network. Everything comes from what the run wrote: metrics.jsonl, recipe.yaml and the stage outputs.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from selfimprove.errors import RunDirError
from selfimprove.rundir import is_done, load_rows

DIVERSITY = ("diversity/probe/answer_entropy", "diversity/probe/distinct_answers_per_prompt", "diversity/probe/ngram_vendi",
             "diversity/generated/distinct_answers_per_prompt", "diversity/selected/ngram_vendi", "quality/probe/pass@k_minus_pass@1")
STAGE_TIMES = ("generate", "judge", "filter", "select", "train", "evaluate")


def load_metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        raise RunDirError(f"{run} has no metrics.jsonl: not a run directory, or no round has finished yet.")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _series(rows: list[dict], key: str):
    pts = [(r["round"], r[key]) for r in rows if key in r and r[key] is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _fig(path: Path, draw, ncols: int = 1, nrows: int = 1, size=(6.4, 3.6)):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    draw(axes.ravel())
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_all(runs: dict[str, list[dict]], out: Path) -> list[tuple[str, Path]]:
    """(title, png) for every panel the runs have data for."""
    from matplotlib.ticker import MaxNLocator

    names = list(runs)
    plots = []

    def lines(ax, keys, title, styles=("-", "--")):
        for name in names:
            for key, style in zip(keys, styles):
                x, y = _series(runs[name], key)
                if x:
                    ax.plot(x, y, style, marker="o", label=f"{name}: {key.split('/')[-1]}" if len(keys) > 1 else name)
            alarms = [r["round"] for r in runs[name] if any(k.startswith("alarm/") for k in r)]
            for key in keys[:1]:
                x, y = _series([r for r in runs[name] if r["round"] in alarms], key)
                if x:
                    ax.scatter(x, y, marker="x", s=90, color="red", zorder=5, label=f"{name}: alarm")
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)

    plots.append(("Accuracy, in- vs out-of-distribution", _fig(out / "accuracy.png", lambda ax: lines(
        ax[0], ("eval/accuracy/id", "eval/accuracy/ood"), "eval accuracy (solid: ID, dashed: OOD)"))))
    if any("eval/frontier" in r for rows in runs.values() for r in rows):
        plots.append(("Difficulty frontier", _fig(out / "frontier.png", lambda ax: lines(ax[0], ("eval/frontier",), "eval/frontier"))))
    if any("quality/acceptance_rate" in r for rows in runs.values() for r in rows):
        plots.append(("Acceptance rate", _fig(out / "acceptance.png", lambda ax: lines(
            ax[0], ("quality/acceptance_rate",), "quality/acceptance_rate"))))
    present = [k for k in DIVERSITY if any(k in r for rows in runs.values() for r in rows)]
    if present:
        def diversity(axes):
            for ax, key in zip(axes, present):
                lines(ax, (key,), key + "  (x: an alarm fired)")
            for ax in axes[len(present):]:
                ax.axis("off")
        plots.append(("Diversity over rounds, with alarms", _fig(out / "diversity.png", diversity, ncols=2, nrows=(len(present) + 1) // 2)))

    def per_run(draw_one):
        def draw(axes):
            for ax, name in zip(axes, names):
                draw_one(ax, name, runs[name])
        return draw

    def times(ax, name, rows):
        bottom = [0.0] * len(rows)
        for stage in STAGE_TIMES:
            vals = [r.get(f"time/{stage}_s", 0.0) for r in rows]
            ax.bar([r["round"] for r in rows], vals, bottom=bottom, label=stage)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_title(f"{name}: time per stage (s)")
        ax.set_xlabel("round")
        ax.legend(fontsize=7)

    plots.append(("Time per stage", _fig(out / "time.png", per_run(times), ncols=len(names))))

    def funnel(ax, name, rows):
        rows = [r for r in rows if "quality/generated" in r]
        width = 0.27
        for i, (key, label) in enumerate((("quality/generated", "generated"), ("quality/kept", "kept by the filter"),
                                          ("quality/selected", "selected"))):
            ax.bar([r["round"] + (i - 1) * width for r in rows], [r[key] for r in rows], width, label=label)
        ax.set_title(f"{name}: data funnel")
        ax.set_xlabel("round")
        ax.legend(fontsize=7)

    if any("quality/generated" in r for rows in runs.values() for r in rows):
        plots.append(("Data funnel: generated, kept, selected", _fig(out / "funnel.png", per_run(funnel), ncols=len(names))))
    return plots


def sample_tables(run: Path, rows: list[dict], n: int = 8) -> str:
    """The last round's first selected samples and first rejected ones, with why."""
    last = max((r["round"] for r in rows if "quality/generated" in r), default=None)
    if last is None:
        return "<p>No self-improvement round yet.</p>"
    stage = run / f"round_{last:02d}"
    out = [f"<h3>Round {last} samples</h3>"]
    for title, path, keep, reason in (("selected", stage / "select" / "data", True, "select_reason"),
                                      ("rejected by the filter", stage / "filter" / "data", False, "filter_reason")):
        if not is_done(path.parent):
            continue
        picked = [r for r in load_rows(path) if bool(r.get("selected", r.get("kept"))) == keep][:n]
        cells = "".join(f"<tr><td><code>{html.escape(r['prompt'])}</code></td><td><code>{html.escape(r['completion'])}</code></td>"
                        f"<td>{r['score']:.3f}</td><td>{html.escape(str(r[reason]))}</td></tr>" for r in picked)
        out.append(f"<h4>{title}</h4><table><tr><th>prompt</th><th>completion</th><th>score</th><th>why</th></tr>{cells}</table>")
    return "".join(out)


def recipe_history(run: Path, rows: list[dict]) -> str:
    """Which recipe each round ran under (recipes/history.json), with what changed at each switch."""
    from selfimprove.runs import history

    entries = history(run)
    if not entries:
        return ""
    rounds = {h["hash"]: [r["round"] for r in rows if r.get("recipe") == h["hash"]] for h in entries}
    cells = "".join(f"<tr><td>{h['index']}</td><td><code>{h['hash']}</code></td><td>{h['from_round']}</td>"
                    f"<td>{', '.join(map(str, rounds[h['hash']])) or '-'}</td>"
                    f"<td>{html.escape('; '.join(h['changes'])) or 'the starting recipe'}</td></tr>" for h in entries)
    return ("<h3>Recipe history</h3><table><tr><th>#</th><th>hash</th><th>from round</th><th>rounds run under it</th>"
            f"<th>changes</th></tr>{cells}</table>")


def _img(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def write_report(run_dirs: list[str], out: str | None = None) -> Path:
    """Write report.html and its PNGs into ``out`` (default: RUN_DIR/report for one run); return the HTML path."""
    runs = {Path(r).name: Path(r) for r in run_dirs}
    if len(runs) < len(run_dirs):
        runs = {str(Path(r)): Path(r) for r in run_dirs}  # two runs with the same folder name
    metrics = {name: load_metrics(path) for name, path in runs.items()}
    out_dir = Path(out) if out else next(iter(runs.values())) / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = plot_all(metrics, out_dir)
    last = {name: rows[-1] for name, rows in metrics.items()}
    keys = sorted({k for row in last.values() for k in row if k.split("/")[0] in ("eval", "quality", "diversity", "complexity")})
    table = "".join(f"<tr><td>{html.escape(k)}</td>" + "".join(
        f"<td>{last[n][k]:.4g}</td>" if isinstance(last[n].get(k), (int, float)) else "<td></td>" for n in metrics) + "</tr>"
        for k in keys)
    sections = "".join(f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="{_img(png)}">' for title, png in plots)
    configs = "".join(f"<details><summary>{html.escape(name)}: recipe.yaml</summary><pre>{html.escape((path / 'recipe.yaml').read_text())}</pre></details>"
                      + recipe_history(path, metrics[name]) for name, path in runs.items() if (path / "recipe.yaml").exists())
    samples = "".join(f"<h2>{html.escape(name)}: samples</h2>{sample_tables(path, metrics[name])}" for name, path in runs.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>selfimprove report: {html.escape(', '.join(runs))}</title>
<style>body{{font-family:sans-serif;max-width:1300px;margin:auto}}img{{max-width:100%}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}pre{{background:#f6f6f6;padding:8px}}</style></head>
<body><h1>selfimprove report</h1><p>Runs: {html.escape(', '.join(f'{n} ({len(metrics[n])} rounds)' for n in runs))}</p>
{sections}<h2>Last round's metrics</h2><table><tr><th>metric</th>{''.join(f'<th>{html.escape(n)}</th>' for n in metrics)}</tr>{table}</table>
<h2>Config</h2>{configs}{samples}
<script>window.addEventListener("load",()=>{{const ok=[...document.images].filter(i=>i.complete&&i.naturalWidth>0).length;
document.body.dataset.imagesLoaded=ok;document.body.dataset.imagesTotal=document.images.length;}});</script></body></html>"""
    path = out_dir / "report.html"
    path.write_text(page)
    return path
