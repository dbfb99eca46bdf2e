"""``selfimprove report RUN_DIR [RUN_DIR ...]``: a self-contained HTML report (plus the PNG plots) of one run, or of
several overlaid. Plots are matplotlib PNGs, embedded as data URIs, so the page opens from disk with no server and no
network. Everything comes from what the run wrote: metrics.jsonl, recipe.yaml and the stage outputs.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from selfimprove import registry
from selfimprove.core.errors import RunDirError
from selfimprove.tools.report_sections import (
    compute_section,
    environment_section,
    recipe_history,
    sample_tables,
    used_config,
)

DIVERSITY = (
    "diversity/probe/answer_entropy",
    "diversity/probe/distinct_answers_per_prompt",
    "diversity/probe/ngram_vendi",
    "diversity/generated/distinct_answers_per_prompt",
    "diversity/selected/ngram_vendi",
    "quality/probe/pass@k_minus_pass@1",
)

PROMPTS = (
    "prompts/ngram_vendi",
    "prompts/novelty",
    "prompts/difficulty",
    "prompts/proposed_share",
    "prompts/propose/kept",
    "prompts/propose/too_easy",
    "prompts/propose/too_hard",
    "prompts/proposed/pass_rate",
)


ONLINE = (  # TRL's per-step metrics of GRPO rounds, each the round's mean (selfimprove.stages.train.grpo)
    "train/reward",
    "train/reward_std",
    "train/frac_reward_zero_std",
    "train/entropy",
    "train/kl",
    "train/clip_ratio/region_mean",
    "train/completions/mean_length",
    "train/completions/clipped_ratio",
)


def load_metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        raise RunDirError(f"{run} has no metrics.jsonl: not a run directory, or no round has finished yet.")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _series(rows: list[dict], key: str):
    pts = [(r["round"], r[key]) for r in rows if key in r and r[key] is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _fig(path: Path, draw, ncols: int = 1, nrows: int = 1, size=(6.4, 3.6)):
    # A Figure of its own, not pyplot: no global backend switch, no figure registry to leak into the caller's.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows))
    draw(fig.subplots(nrows, ncols, squeeze=False).ravel())
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


# Metrics that live in [0, 1] (shares, rates, accuracies): drawn on that whole range, so a 0.01 change looks like one.
BOUNDED = ("accuracy", "distinct", "share", "coverage", "pass@", "kept_rate", "novelty", "agreement", "balance")


def _round_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _natural_range(ax, key: str, values: list[float]) -> str:
    """A y axis that does not exaggerate: [0, 1] for a bounded metric, from 0 for a non-negative one; else the
    data's own range, said in the title's suffix (returned)."""
    if not values:
        return ""
    if min(values) >= 0 and max(values) <= 1 and any(b in key for b in BOUNDED):
        ax.set_ylim(-0.02, 1.02)
        return ""
    if min(values) >= 0:
        ax.set_ylim(bottom=0, top=max(values) * 1.05 or 1)
        return ""
    return "  (y: the data's range)"


def _lines(ax, runs: dict[str, list[dict]], keys: tuple, title: str, styles=("-", "--")) -> None:
    """Each run's series of ``keys`` over rounds; red crosses where one of the run's alarms fired."""
    values, fired = [], False
    for name, rows in runs.items():
        for key, style in zip(keys, styles):
            x, y = _series(rows, key)
            values += y
            if x:
                ax.plot(x, y, style, marker="o", label=f"{name}: {key.split('/')[-1]}" if len(keys) > 1 else name)
        alarms = [r["round"] for r in rows if any(k.startswith("alarm/") for k in r)]
        x, y = _series([r for r in rows if r["round"] in alarms], keys[0])
        if x:
            fired = True
            ax.scatter(x, y, marker="x", s=90, color="red", zorder=5, label=f"{name}: alarm")
    ax.set_title(title + _natural_range(ax, keys[0], values) + ("  (x: an alarm fired)" if fired else ""))
    _round_axis(ax)
    ax.legend(fontsize=7)


def _times(ax, name: str, rows: list[dict]) -> None:
    bottom = [0.0] * len(rows)
    for part in ("reward_model", *registry.STAGES, "between_stages"):
        vals = [r.get(f"time/{part}_s", 0.0) for r in rows]
        if any(vals):
            ax.bar([r["round"] for r in rows], vals, bottom=bottom, label=part.replace("_", " "))
            bottom = [b + v for b, v in zip(bottom, vals)]
    shares = [r["time/overhead_share"] for r in rows if "time/overhead_share" in r]
    overhead = f", overhead {100 * sum(shares) / len(shares):.1f}% of a round" if shares else ""
    ax.set_title(f"{name}: time per stage (s){overhead}")
    _round_axis(ax)
    ax.legend(fontsize=7)


FUNNEL = (("quality/generated", "generated"), ("quality/kept", "kept by the filter"), ("quality/selected", "selected"))


def _funnel(ax, name: str, rows: list[dict]) -> None:
    rows = [r for r in rows if "quality/generated" in r]
    width = 0.27
    for i, (key, label) in enumerate(FUNNEL):
        ax.bar([r["round"] + (i - 1) * width for r in rows], [r[key] for r in rows], width, label=label)
    ax.set_title(f"{name}: data funnel (samples per round)")
    _round_axis(ax)
    ax.legend(fontsize=7)


def _has(runs: dict[str, list[dict]], key: str) -> bool:
    return any(key in r for rows in runs.values() for r in rows)


def _per_run(runs: dict[str, list[dict]], draw_one):
    """A drawing function with one panel per run."""

    def draw(axes):
        for ax, (name, rows) in zip(axes, runs.items()):
            draw_one(ax, name, rows)

    return draw


def _grid(runs: dict[str, list[dict]], present: list[str]):
    def draw(axes):
        for ax, key in zip(axes, present):
            _lines(ax, runs, (key,), key)
        for ax in axes[len(present) :]:
            ax.axis("off")

    return draw


def plot_all(runs: dict[str, list[dict]], out: Path) -> list[tuple[str, Path]]:
    """(title, png) for every panel the runs have data for."""
    ood = ("eval/accuracy/id", "eval/accuracy/ood")
    plots = [
        (
            "Accuracy, in- vs out-of-distribution",
            _fig(out / "accuracy.png", lambda ax: _lines(ax[0], runs, ood, "eval accuracy (solid: ID, dashed: OOD)")),
        )
    ]
    for title, key, file in (
        ("Difficulty frontier", "eval/frontier", "frontier.png"),
        ("Acceptance rate", "quality/acceptance_rate", "acceptance.png"),
    ):
        if _has(runs, key):
            plots.append((title, _fig(out / file, lambda ax, key=key: _lines(ax[0], runs, (key,), key))))
    for title, file, keys in (
        ("Diversity over rounds, with alarms", "diversity.png", DIVERSITY),
        ("Prompts: diversity, novelty, difficulty and the propose stage's funnel", "prompts.png", PROMPTS),
        ("Online (GRPO) rounds: reward, entropy, KL, clipping (per-round means)", "online.png", ONLINE),
    ):
        present = [k for k in keys if _has(runs, k)]
        if present:
            plots.append((title, _fig(out / file, _grid(runs, present), ncols=2, nrows=(len(present) + 1) // 2)))
    plots.append(("Time per stage", _fig(out / "time.png", _per_run(runs, _times), ncols=len(runs))))
    if _has(runs, "quality/generated"):
        funnel = _fig(out / "funnel.png", _per_run(runs, _funnel), ncols=len(runs))
        plots.append(("Data funnel: generated, kept, selected", funnel))
    return plots


def _img(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _study_plots(result: dict, out: Path) -> list[tuple[str, Path]]:
    """Per metric, each arm's mean over rounds with its 95% CI band; then the final round's differences from the
    baseline as a forest plot (one panel per metric)."""
    metrics, arms = result["metrics"], list(result["arms"])

    def bands(axes):
        for ax in axes[len(metrics) :]:  # the grid's spare panels
            ax.axis("off")
        for ax, metric in zip(axes, metrics):
            values = []
            for arm in arms:
                pts = sorted((int(k), v[metric]) for k, v in result["arms"][arm].items() if v[metric]["n"])
                if not pts:
                    continue
                x = [k for k, _ in pts]
                ax.plot(x, [v["mean"] for _, v in pts], marker="o", label=f"{arm} (n={pts[-1][1]['n']})")
                lo = [v["ci_low"] if np.isfinite(v["ci_low"]) else v["mean"] for _, v in pts]
                hi = [v["ci_high"] if np.isfinite(v["ci_high"]) else v["mean"] for _, v in pts]
                ax.fill_between(x, lo, hi, alpha=0.2)
                values += lo + hi
            ax.set_title(f"{metric}: mean, 95% CI over seeds{_natural_range(ax, metric, values)}", fontsize=9)
            _round_axis(ax)
            if values:
                ax.legend(fontsize=7)
            else:
                ax.text(0.5, 0.5, "no arm reports it", ha="center", va="center", transform=ax.transAxes)

    k = str(result["final_round"])
    others = [a for a in arms if a in result["differences"]]

    def forest(axes):
        for ax in axes[len(metrics) :]:
            ax.axis("off")
        for ax, metric in zip(axes, metrics):
            ds = [result["differences"][a].get(k, {}).get(metric, {}) for a in others]
            y = np.arange(len(others))
            mean = [d.get("mean", np.nan) for d in ds]
            err = [
                [m - d.get("ci_low", np.nan) for m, d in zip(mean, ds)],
                [d.get("ci_high", np.nan) - m for m, d in zip(mean, ds)],
            ]
            ax.errorbar(mean, y, xerr=np.nan_to_num(np.array(err)), fmt="o", capsize=4)
            ax.axvline(0, color="grey", lw=1, ls="--")
            ax.set_yticks(y, others)
            ax.set_title(f"{metric}: arm - {result['baseline']}, round {k}", fontsize=9)

    n, cols = len(metrics), min(3, len(metrics))
    rows = -(-n // cols)
    plots = [
        ("each arm over rounds (mean, 95% CI over seeds)", _fig(out / "study_rounds.png", bands, cols, rows, (5, 3.4)))
    ]
    if others:
        plots.append(
            (
                "final-round differences from the baseline (paired, 95% CI)",
                _fig(out / "study_forest.png", forest, cols, rows, (5, 0.6 + 0.5 * len(others))),
            )
        )
    return plots


_CSS = (
    "body{font-family:sans-serif;max-width:1300px;margin:auto}img{max-width:100%}"
    "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
    "pre{background:#f6f6f6;padding:8px}.warn{color:#a60}"
)
# The render test reads how many images decoded from these attributes.
_SCRIPT = (
    'window.addEventListener("load",()=>{const ok=[...document.images].filter(i=>i.complete&&i.naturalWidth>0)'
    ".length;document.body.dataset.imagesLoaded=ok;document.body.dataset.imagesTotal=document.images.length;});"
)


def _page(title: str, body: str) -> str:
    """One self-contained HTML page: the styles and the image check inline, every image a data: URI."""
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_CSS}</style>'
        f"</head>\n<body>{body}\n<script>{_SCRIPT}</script></body></html>"
    )


def write_study_report(study_dir: Path, out: str | None = None) -> Path:
    """A study's page: CI bands, the forest plot, the final-round table and links to each run's directory."""
    result = json.loads((study_dir / "study.json").read_text())
    out_dir = Path(out) if out else study_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = "".join(
        f'<h2>{html.escape(t)}</h2><img alt="{html.escape(t)}" src="{_img(png)}">'
        for t, png in _study_plots(result, out_dir)
    )
    k = str(result["final_round"])
    fmt = lambda v: "-" if v is None or v != v else f"{v:.4g}"  # noqa: E731
    rows = ""
    for arm, by_round in result["arms"].items():
        for metric, v in by_round.get(k, {}).items():
            d = result["differences"].get(arm, {}).get(k, {}).get(metric)
            diff = (
                f"{d['mean']:+.4g} [{fmt(d['ci_low'])}, {fmt(d['ci_high'])}], p={fmt(d['p_value'])}"
                if d and d["n"]
                else ""
            )
            rows += (
                f"<tr><td>{html.escape(arm)}</td><td>{html.escape(metric)}</td><td>{v['n']}</td><td>{fmt(v['mean'])} "
                f"[{fmt(v['ci_low'])}, "
                f"{fmt(v['ci_high'])}]</td><td>{' '.join(fmt(x) for x in v['values'])}</td><td>{diff}</td></tr>"
            )
    runs = {name: study_dir / name for name in result["runs"]}
    body = (
        f"<h1>study {html.escape(result['study'])}</h1><p>Seeds {result['seeds']}; baseline "
        f"{html.escape(result['baseline'])}.\nArms: {html.escape(result['method']['arms'])}. Differences: "
        f"{html.escape(result['method']['differences'])}.</p>{sections}\n<h2>Round {k}</h2><table><tr><th>arm</th>"
        "<th>metric</th><th>n</th><th>mean [95% CI]</th><th>per seed</th><th>arm - baseline [95% CI]</th></tr>"
        f"{rows}</table>\n{environment_section(runs)}"
    )
    page = _page(f"selfimprove study: {result['study']}", body)
    path = out_dir / "report.html"
    path.write_text(page)
    return path


def write_report(run_dirs: list[str], out: str | None = None) -> Path:
    """Write report.html and its PNGs into ``out`` (default: RUN_DIR/report for one run); return the HTML path. One
    study directory (with study.json) gets the study's page."""
    if len(run_dirs) == 1 and (Path(run_dirs[0]) / "study.json").exists():
        return write_study_report(Path(run_dirs[0]), out)
    runs = {Path(r).name: Path(r) for r in run_dirs}
    if len(runs) < len(run_dirs):
        runs = {str(Path(r)): Path(r) for r in run_dirs}  # two runs with the same folder name
    metrics = {name: load_metrics(path) for name, path in runs.items()}
    out_dir = Path(out) if out else next(iter(runs.values())) / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = plot_all(metrics, out_dir)
    last = {name: rows[-1] for name, rows in metrics.items()}
    keys = sorted(
        {k for row in last.values() for k in row if k.split("/")[0] in ("eval", "quality", "diversity", "complexity")}
    )
    table = "".join(
        f"<tr><td>{html.escape(k)}</td>"
        + "".join(
            f"<td>{last[n][k]:.4g}</td>" if isinstance(last[n].get(k), (int, float)) else "<td></td>" for n in metrics
        )
        + "</tr>"
        for k in keys
    )
    sections = "".join(
        f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="{_img(png)}">' for title, png in plots
    )
    configs = "".join(
        f"<details><summary>{html.escape(name)}: recipe.yaml, the sections this run uses (the file holds every "
        f"default)</summary><pre>{html.escape(used_config(path / 'recipe.yaml'))}</pre></details>"
        + recipe_history(path, metrics[name])
        for name, path in runs.items()
        if (path / "recipe.yaml").exists()
    )
    samples = "".join(
        f"<h2>{html.escape(name)}: samples</h2>{sample_tables(path, metrics[name])}" for name, path in runs.items()
    )
    heads = "".join(f"<th>{html.escape(n)}</th>" for n in metrics)
    body = (
        "<h1>selfimprove report</h1><p>Runs: "
        + html.escape(", ".join(f"{n} ({len(metrics[n])} rounds)" for n in runs))
        + f"</p>\n{sections}<h2>Last round's metrics</h2><table><tr><th>metric</th>{heads}</tr>{table}</table>\n"
        + f"{compute_section(metrics)}{environment_section(runs)}<h2>Config</h2>{configs}{samples}"
    )
    page = _page(f"selfimprove report: {', '.join(runs)}", body)
    path = out_dir / "report.html"
    path.write_text(page)
    return path
