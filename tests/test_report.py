"""compare (its JSON numbers recomputed independently here) and the HTML report rendered in headless Chromium, both
on the session's tiny run (conftest.tiny_run). TensorBoard logging is checked in tests/test_safety.py."""

import json
import math
import shutil
import subprocess

import numpy as np
import pytest
from conftest import require_chromium, run_cli


def _assert_piped_table(stdout: str, metrics: dict) -> None:
    """Piped: a Markdown table, every metric name whole, eval accuracy first."""
    rows = [line.split(" | ")[0][2:] for line in stdout.splitlines() if line.startswith("| ")]
    assert set(metrics) <= set(rows) and "…" not in stdout
    assert rows[rows.index("metric") + 1].startswith("eval/accuracy/")


@pytest.mark.e2e
def test_compare_json_recomputed_independently(tiny_run, tmp_path):
    import torch

    from selfimprove.backends import Sampling
    from selfimprove.backends.hf import hf_generate
    from selfimprove.core.model import load_policy, load_tokenizer
    from selfimprove.core.rows import load_rows
    from selfimprove.core.runs import open_run

    out = tmp_path / "cmp.json"
    proc = run_cli("compare", tiny_run / "round_00", tiny_run / "round_02", "--json", out, "--permutations", 20)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "win-rate of B over A" in proc.stdout and "per-token KL" in proc.stdout
    res = json.loads(out.read_text())
    _assert_piped_table(proc.stdout, res["metrics"])
    ctx = open_run(str(tiny_run))
    a, b = (str(tiny_run / f"round_0{k}" / "train" / "model") for k in (0, 2))

    # eval accuracy: greedy, one prompt at a time, checked by the task
    rows = ctx.eval_rows()
    for side, ckpt in (("a", a), ("b", b)):
        model, tok = load_policy(ckpt), load_tokenizer(ckpt)
        right = [
            ctx.task.is_correct(
                hf_generate(model, tok, [r["prompt"]], Sampling(max_new_tokens=ctx.task.max_new_tokens(rows)), 0, 1)[0][
                    0
                ]["completion"],
                r["reference"],
            )
            for r in rows
        ]
        acc = np.mean([c for c, r in zip(right, rows) if r["split"] == "id"])
        assert res["metrics"]["eval/accuracy/id"][side] == pytest.approx(acc)
    # B's eval equals what the run's own evaluate stage measured for round 2
    assert res["metrics"]["eval/accuracy/id"]["b"] == pytest.approx(
        json.loads((tiny_run / "metrics.jsonl").read_text().splitlines()[2])["eval/accuracy/id"]
    )
    # probe: distinct answers per prompt and win-rate from the samples and scores in the JSON
    for side in ("a", "b"):
        by_prompt = {}
        for s in res["probe"][side]:
            by_prompt.setdefault(s["prompt_id"], []).append(s)
        distinct = np.mean([len({ctx.task.answer(s["completion"]) for s in v}) for v in by_prompt.values()])
        assert res["metrics"]["diversity/probe/distinct_answers_per_prompt"][side] == pytest.approx(distinct)
    mean = {side: {} for side in ("a", "b")}
    for side in ("a", "b"):
        for s in res["probe"][side]:
            mean[side].setdefault(s["prompt_id"], []).append(s["score"])
    wins = [
        1.0
        if np.mean(mean["b"][p]) > np.mean(mean["a"][p])
        else 0.5
        if np.mean(mean["b"][p]) == np.mean(mean["a"][p])
        else 0.0
        for p in mean["a"]
    ]
    assert res["win_rate_b_vs_a"] == pytest.approx(np.mean(wins))
    # per-prompt metrics: a bootstrap interval around their delta; corpus metrics: a permutation p, no interval
    for key in ("diversity/probe/distinct_answers_per_prompt", "diversity/probe/answer_entropy", "eval/accuracy/id"):
        v = res["metrics"][key]
        assert v["ci_low"] <= v["delta"] <= v["ci_high"], key
    for key in ("diversity/probe/distinct_2", "diversity/probe/ngram_vendi"):
        v = res["metrics"][key]
        assert math.isnan(v["ci_low"]) and 1 / 21 <= v["p_value"] <= 1, key
    assert res["bootstrap"]["eval_resamples"] == 2000 and res["bootstrap"]["corpus_permutations"] == 20
    # per-token KL(A || B) along A's probe samples, one unpadded sequence at a time
    pa, pb, tok = load_policy(a).eval(), load_policy(b).eval(), load_tokenizer(a)
    probe = {r["prompt_id"]: r["prompt"] for r in load_rows(tiny_run / "probe_set" / "data")}
    total, count = 0.0, 0
    for s in res["probe"]["a"]:
        p = tok(probe[s["prompt_id"]])["input_ids"]
        ids = torch.tensor([p + tok(s["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]])
        with torch.no_grad():
            lp, lq = (torch.log_softmax(m(input_ids=ids).logits[0].float(), -1) for m in (pa, pb))
        for t in range(len(p) - 1, ids.shape[1] - 1):
            total += float((lp[t].exp() * (lp[t] - lq[t])).sum())
            count += 1
    assert res["kl_per_token"]["a_to_b"] == pytest.approx(total / count, rel=1e-4)
    assert res["kl_per_token"]["a_to_b"] > 0 and len(res["samples"]) == 5


@pytest.mark.e2e
def test_report_renders_in_headless_chromium(tiny_run, tmp_path):
    browser = require_chromium()
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    proc = run_cli("report", tiny_run, other, "--out", tmp_path / "report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = tmp_path / "report" / "report.html"
    for png in ("accuracy.png", "frontier.png", "acceptance.png", "diversity.png", "time.png", "funnel.png"):
        assert (tmp_path / "report" / png).stat().st_size > 1000, png
    text = page.read_text()
    assert not any(f'{attr}="http' in text for attr in ("src", "href"))  # self-contained: nothing to fetch
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert 'data-images-loaded="6"' in dom and 'data-images-total="6"' in dom  # every plot decoded in the browser
    assert "recipe.yaml" in dom and "Data funnel" in dom and "selected" in dom


@pytest.mark.e2e
def test_report_shows_the_compute_ledger(tiny_run, tmp_path):
    from selfimprove.tools.report import write_report

    rows = [json.loads(x) for x in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    text = write_report([str(tiny_run)], str(tmp_path / "r")).read_text()
    section = text.split("<h2>Compute</h2>", 1)[1].split("<h2>", 1)[0]
    assert "generated_tokens" in section and "padding_share" in section
    config = text.split("<h2>Config</h2>", 1)[1]
    assert "addition:" in config and not any(f"  {t}:" in config for t in ("countdown", "rewrite", "generic"))
    total = rows[-1]["compute/total/generated_tokens"]
    assert total == sum(r["compute/generated_tokens"] for r in rows) and f"<td>{total:.4g}</td>" in section


@pytest.mark.unit
def test_prompt_panel_only_for_runs_that_measure_prompts(tmp_path):
    from selfimprove.tools.report import PROMPTS, plot_all

    base = [{"round": k, "eval/accuracy/id": 0.5, "eval/accuracy/ood": 0.1} for k in range(3)]
    titles = [t for t, _ in plot_all({"plain": base}, tmp_path)]
    assert not any(t.startswith("Prompts") for t in titles) and not (tmp_path / "prompts.png").exists()
    measured = [{**r, **({key: 0.1 * r["round"] for key in PROMPTS} if r["round"] else {})} for r in base]
    titles = [t for t, _ in plot_all({"plain": base, "propose": measured}, tmp_path)]
    assert any(t.startswith("Prompts") for t in titles) and (tmp_path / "prompts.png").stat().st_size > 1000


@pytest.mark.unit
def test_tables_never_cut_a_name():
    import io
    import re

    from selfimprove.tools.tables import show_table

    name = "diversity/probe/" + "very_long_metric_name_" * 5
    piped = io.StringIO()
    show_table("t", ["metric", "CI"], [[name, "**[+0.1, +0.2]**"]], file=piped)
    assert f"| {name} | **[+0.1, +0.2]** |" in piped.getvalue()  # bold kept as ** without colour

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    show_table("t", ["metric", "CI"], [[name, "**[+0.1, +0.2]**"]], file=term)
    text = term.getvalue()
    lines = [line.split("│") for line in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines() if line.count("│") == 3]
    assert "".join(cells[1].strip() for cells in lines) == name  # the first column, line by line: wrapped, not cut
    assert "\x1b[1m[+0.1, +0.2]\x1b[0m" in text and "**" not in text  # bold as bold


@pytest.mark.unit
def test_plots_say_what_they_show():
    """Integer round ticks; a bounded metric on [0, 1] and a non-negative one from 0 (a 0.005 rise is not drawn as a
    leap); the alarm legend in the title only where an alarm fired."""
    from matplotlib.figure import Figure

    from selfimprove.tools.report import _lines

    rows = [
        {"round": k, "eval/accuracy/id": 0.5 + 0.005 * k, "diversity/probe/answer_entropy": 1 - 0.01 * k}
        for k in range(3)
    ]
    ax = Figure().subplots()
    _lines(ax, {"run": rows}, ("eval/accuracy/id",), "eval/accuracy/id")
    assert ax.get_title() == "eval/accuracy/id" and ax.get_ylim() == pytest.approx((-0.02, 1.02))
    assert all(float(t).is_integer() for t in ax.get_xticks())
    alarmed = [{**r, **({"alarm/diversity": 1} if r["round"] == 2 else {})} for r in rows]
    ax = Figure().subplots()
    _lines(ax, {"run": alarmed}, ("diversity/probe/answer_entropy",), "diversity/probe/answer_entropy")
    assert ax.get_title() == "diversity/probe/answer_entropy  (x: an alarm fired)" and ax.get_ylim()[0] == 0
