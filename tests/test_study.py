"""selfimprove study: a tiny study run through the CLI, its aggregate recomputed here by hand, a killed study
resumed, --jobs 2 against --jobs 1, and the study file's errors."""

import csv
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY_RECIPE, run_cli

T975 = {2: 12.706204736174704, 3: 4.302652729911275}  # t(0.975, n-1), from tables
METRICS = [
    "eval/accuracy/id",
    "diversity/probe/distinct_2",
    "quality/probe/pass@1",
    "quality/kept",
]  # kept: none at round 0


def _study_file(tmp: Path, seeds=(0, 1, 2), **extra) -> Path:
    data = {
        "name": "tiny",
        "base": str(TINY_RECIPE),
        "seeds": list(seeds),
        "metrics": METRICS,
        "primary": ["eval/accuracy/id"],
        "contrasts": [
            {"arm": "hot", "metric": "eval/accuracy/id"},
            {"arm": "hot", "vs": "cool", "metric": "diversity/probe/distinct_2", "expect": "less"},
        ],
        "match": [{"quantity": "compute/total/optimizer_steps"}],
        "arms": [
            {"name": "cool", "overrides": {"rounds": 1, "generate.temperature": 0.6}},
            {"name": "hot", "overrides": {"rounds": 1, "generate.temperature": 1.2}},
        ],
        **extra,
    }
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _study(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "selfimprove", "study", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    out = _study(_study_file(tmp), "--output_dir", tmp / "out", "--jobs", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    (tmp / "console.txt").write_text(out.stdout)  # piped, as in a log
    return tmp / "out"


@pytest.mark.e2e
def test_piped_console_is_study_md(study):
    """Piped, the console prints study.md's tables whole (no name cut at a terminal width, the same percent), and
    points at study.md."""
    console = (study.parent / "console.txt").read_text()
    rows = [line for line in (study / "study.md").read_text().splitlines() if line.startswith("| ")]
    assert rows and all(line in console.splitlines() for line in rows)
    assert "…" not in console and f"tables: {study / 'study.md'}" in console


def _metric(run: Path, k: int, name: str):
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in rows if r["round"] == k).get(name)


@pytest.mark.e2e
def test_runs_are_ordinary_run_directories(study):
    for arm in ("cool", "hot"):
        for s in (0, 1, 2):
            run = study / arm / f"seed_{s}"
            saved = yaml.safe_load((run / "recipe.yaml").read_text())
            assert saved["seed"] == s and saved["rounds"] == 1
            assert saved["generate"]["temperature"] == (0.6 if arm == "cool" else 1.2)
            assert (run / "environment.json").exists()
    assert run_cli("verify", study / "hot" / "seed_1").returncode == 0


@pytest.mark.e2e
def test_aggregate_recomputed_by_hand(study):
    result = json.loads((study / "study.json").read_text())
    assert result["final_round"] == 1
    for k in (0, 1):
        for metric in METRICS:
            for arm in ("cool", "hot"):
                values = [_metric(study / arm / f"seed_{s}", k, metric) for s in (0, 1, 2)]
                got = result["arms"][arm][str(k)][metric]
                if k == 0 and metric == "quality/kept":
                    assert values == [None] * 3 and got["n"] == 0  # a metric a round does not have counts no seed
                    continue
                mean, sd = statistics.mean(values), statistics.stdev(values)
                half = T975[3] * sd / math.sqrt(3)
                assert got["values"] == values and got["n"] == 3
                assert got["mean"] == pytest.approx(mean) and got["sd"] == pytest.approx(sd)
                if sd:
                    assert (got["ci_low"], got["ci_high"]) == (pytest.approx(mean - half), pytest.approx(mean + half))
            if k == 0 and metric == "quality/kept":
                continue
            diffs = [
                _metric(study / "hot" / f"seed_{s}", k, metric) - _metric(study / "cool" / f"seed_{s}", k, metric)
                for s in (0, 1, 2)
            ]
            d = result["differences"]["hot"][str(k)][metric]
            assert d["per_pair"] == pytest.approx(diffs) and d["mean"] == pytest.approx(statistics.mean(diffs))
            if statistics.stdev(diffs):
                half = T975[3] * statistics.stdev(diffs) / math.sqrt(3)
                assert d["ci_high"] - d["ci_low"] == pytest.approx(2 * half)
    assert "cool" not in result["differences"]  # the baseline: the first arm
    rows = list(csv.DictReader((study / "study.csv").open()))
    assert len(rows) == 2 * 2 * len(METRICS)
    row = next(r for r in rows if r["arm"] == "hot" and r["round"] == "1" and r["metric"] == METRICS[1])
    assert float(row["mean"]) == pytest.approx(result["arms"]["hot"]["1"][METRICS[1]]["mean"])
    assert float(row["diff_vs_baseline"]) == pytest.approx(result["differences"]["hot"]["1"][METRICS[1]]["mean"])


@pytest.mark.e2e
def test_rerun_skips_finished_runs_and_report_draws_the_study(study):
    again = _study(study / "study_file_missing.yaml", "--output_dir", study)
    assert again.returncode == 2 and "does not exist" in again.stderr
    saved = yaml.safe_load((study / "study.yaml").read_text())
    tmp = study.parent
    out = _study(tmp / "study.yaml", "--output_dir", study)
    assert out.returncode == 0 and "start" not in out.stderr, out.stderr[-2000:]
    assert yaml.safe_load((study / "study.yaml").read_text()) == saved
    page = run_cli("report", study)
    assert page.returncode == 0, page.stderr[-2000:]
    text = (study / "report" / "report.html").read_text()
    assert "study_rounds" not in text and text.count("data:image/png;base64,") == 2 and "arm - baseline" in text


@pytest.mark.e2e
def test_a_changed_study_is_refused(study, tmp_path):
    changed = _study_file(tmp_path, seeds=(0, 1, 3))
    out = _study(changed, "--output_dir", study)
    assert out.returncode == 2 and "other seeds" in out.stderr, out.stderr


@pytest.mark.slow  # 8 more runs (~2 min); the slow tier runs in .ci/run
def test_killed_study_resumes_to_what_jobs_2_made(study, tmp_path):
    """Every run SIGKILLed inside round 1's training (as killing the whole study would leave them), then the study
    rerun with --jobs 1: the runs end identical, rows and weights, to the --jobs 2 study's."""
    from test_loop import _artifacts, _strip_times

    path = _study_file(tmp_path, seeds=(0, 1))  # two of the fixture's three seeds: the same runs
    killed = _study(
        path, "--output_dir", tmp_path / "out", "--jobs", "1", env={"SELFIMPROVE_FAULT": "round_01/train:before_done"}
    )
    assert killed.returncode == 2 and "4 run(s) failed" in killed.stderr, killed.stderr[-2000:]
    assert (tmp_path / "out" / "hot" / "seed_1" / "round_00" / "monitor" / "DONE").exists()
    out = _study(path, "--output_dir", tmp_path / "out", "--jobs", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    for arm in ("cool", "hot"):
        for s in (0, 1):
            a, b = study / arm / f"seed_{s}", tmp_path / "out" / arm / f"seed_{s}"
            rows = lambda run: _strip_times([json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()])  # noqa: E731
            assert rows(a) == rows(b)
            assert _artifacts(a) == _artifacts(b)


@pytest.mark.e2e
def test_declared_contrasts_recomputed_by_hand(study):
    """Each declared contrast: paired t, sign-flip p, Holm over both, and the verdict by the stated rule."""
    from scipy import stats

    from selfimprove.tools.stats import verdict

    result = json.loads((study / "study.json").read_text())
    got = result["contrasts"]
    assert [(c["arm"], c["vs"], c["metric"], c["expect"], c["round"]) for c in got] == [
        ("hot", "cool", "eval/accuracy/id", "greater", 1),
        ("hot", "cool", "diversity/probe/distinct_2", "less", 1),
    ]
    ps = []
    for c in got:
        d = [
            _metric(study / "hot" / f"seed_{s}", 1, c["metric"]) - _metric(study / "cool" / f"seed_{s}", 1, c["metric"])
            for s in (0, 1, 2)
        ]
        assert c["per_pair"] == pytest.approx(d) and c["n"] == 3 and c["unmatched"] == []  # same steps in both arms
        flips = [sum(x * s for x, s in zip(d, signs)) for signs in itertools.product((1, -1), repeat=3)]
        assert c["sign_flip_p"] == pytest.approx(sum(abs(f) >= abs(sum(d)) - 1e-12 for f in flips) / 8)
        p = stats.ttest_1samp(d, 0).pvalue if statistics.stdev(d) else c["sign_flip_p"]
        assert c["p_value"] == pytest.approx(p)
        ps.append(p)
    low, high = sorted(range(2), key=lambda i: ps[i])
    assert got[low]["holm_p"] == pytest.approx(min(1, 2 * ps[low]))
    assert got[high]["holm_p"] == pytest.approx(min(1, max(2 * ps[low], ps[high])))
    for c in got:
        assert c["verdict"] == verdict(c, c["holm_p"], c["expect"])
    text = (study / "study.md").read_text()
    assert "Declared contrasts (primary: eval/accuracy/id)" in text and f"**{got[0]['verdict']}**" in text


@pytest.mark.e2e
def test_the_bundle_holds_what_the_numbers_are_made_of(study, tmp_path):
    """study/bundle: no checkpoint or data; aggregating the bundle alone gives the same study.json."""
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(study / "bundle", bundle)
    files = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()}
    assert {"study.json", "study.md", "study_file.yaml", "bundle.json", "cool/seed_0/metrics.jsonl"} <= files
    assert "hot/seed_2/environment.json" in files and "recipes/hot.yaml" in files
    assert not any("model" in f or f.endswith((".safetensors", ".arrow", ".parquet")) for f in files)
    assert sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()) < 2_000_000
    before = json.loads((bundle / "study.json").read_text())
    out = _study(bundle / "study_file.yaml", "--output_dir", bundle, "--aggregate")
    assert out.returncode == 0, out.stderr[-2000:]
    after = json.loads((bundle / "study.json").read_text())
    assert after["contrasts"] == before["contrasts"] and after["arms"] == before["arms"]
    assert not (bundle / "bundle").exists()


@pytest.mark.e2e
def test_unmatched_arms_get_no_verdict(study, tmp_path):
    """Aggregated again under a match rule the arms break (other temperatures sample other token counts): every
    contrast says 'unmatched', with the quantity and the seed, and the runs are not touched."""
    path = _study_file(tmp_path, match=[{"quantity": "compute/total/generated_tokens"}])
    out = _study(path, "--output_dir", study, "--aggregate")
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((study / "study.json").read_text())
    assert {c["verdict"] for c in result["contrasts"]} == {"unmatched"}
    assert "compute/total/generated_tokens differs by" in result["contrasts"][0]["unmatched"][0]
    assert "**unmatched**: compute/total/generated_tokens differs" in (study / "study.md").read_text()
    assert _study(_study_file(tmp_path), "--output_dir", study, "--aggregate").returncode == 0  # as it was


@pytest.mark.e2e
def test_a_derived_metric_is_a_minus_b_in_each_run_and_a_contrast_tests_it(study, tmp_path):
    """An interaction contrast: 'gap' = id accuracy - distinct_2 in each run and round, hot - cool paired by seed;
    'avg' their mean."""
    a, b = "eval/accuracy/id", "diversity/probe/distinct_2"
    derived = [{"name": "gap", "op": "difference", "of": [a, b]}, {"name": "avg", "op": "mean", "of": [a, b]}]
    path = _study_file(
        tmp_path, derived=derived, metrics=["avg"], primary=["gap"], contrasts=[{"arm": "hot", "expect": "less"}]
    )
    out = _study(path, "--output_dir", study, "--aggregate")
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((study / "study.json").read_text())
    assert result["derived"] == derived
    gap = {
        (arm, s): _metric(study / arm / f"seed_{s}", 1, a) - _metric(study / arm / f"seed_{s}", 1, b)
        for arm in ("cool", "hot")
        for s in (0, 1, 2)
    }
    assert result["arms"]["hot"]["1"]["gap"]["values"] == pytest.approx([gap[("hot", s)] for s in (0, 1, 2)])
    cool = [
        (_metric(study / "cool" / f"seed_{s}", 1, a) + _metric(study / "cool" / f"seed_{s}", 1, b)) / 2
        for s in (0, 1, 2)
    ]
    assert result["arms"]["cool"]["1"]["avg"]["values"] == pytest.approx(cool)
    (c,) = result["contrasts"]
    assert (c["metric"], c["vs"], c["expect"]) == ("gap", "cool", "less")
    assert c["per_pair"] == pytest.approx([gap[("hot", s)] - gap[("cool", s)] for s in (0, 1, 2)])
    assert _study(_study_file(tmp_path), "--output_dir", study, "--aggregate").returncode == 0  # as it was


@pytest.mark.e2e
def test_bad_study_files_get_one_message(tmp_path):
    cases = [
        ("arms", [{"name": "cool", "overrides": {"train.no_such_field": 1}}, {"name": "hot"}], "arm 'cool'"),
        ("seeds", [0, 0], "seeds=[0, 0]: give distinct"),
        ("baseline", "nope", "baseline='nope' is not an arm (cool, hot)"),
        ("contrasts", [{"arm": "hott"}], "contrasts[0].arm='hott' is not an arm"),
        ("contrasts", [{"arm": "hot", "metrc": "x"}], "contrasts[0].metrc: unknown key. Did you mean 'metric'?"),
        ("primry", ["x"], "primry: unknown key. Did you mean 'primary'?"),
        ("slurm", {"partion": "cpu"}, "slurm.partion: unknown key. Did you mean 'partition'?"),
        ("derived", [{"name": "gap", "of": ["eval/accuracy/id"]}], "derived[0].of=['eval/accuracy/id']: 'difference'"),
    ]
    for i, (field, value, message) in enumerate(cases):
        path = _study_file(tmp_path, **{field: value})
        out = _study(path, "--output_dir", tmp_path / f"out_{i}")
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, (field, out.stderr)
    both = _study_file(tmp_path, seeds=[0, 0], baseline="nope")  # every problem at once
    out = _study(both, "--output_dir", tmp_path / "both")
    assert "seeds=[0, 0]" in out.stderr and "baseline='nope'" in out.stderr
    overrides_seed = _study_file(tmp_path, arms=[{"name": "cool", "overrides": {"seed": 3}}, {"name": "hot"}])
    out = _study(overrides_seed, "--output_dir", tmp_path / "o")
    assert out.returncode == 2 and "'seed' and 'output_dir' are the study's" in out.stderr


@pytest.mark.e2e
def test_study_wide_overrides_apply_to_every_arm_and_the_arms_own_win(tmp_path):
    from selfimprove.tools.study_file import load_study

    path = _study_file(tmp_path, overrides={"rounds": 2, "generate.temperature": 0.9, "train.max_steps": 3})
    arms = {a.name: a.overrides for a in load_study(path).arms}
    assert arms == {
        "cool": {"rounds": 1, "generate.temperature": 0.6, "train.max_steps": 3},
        "hot": {"rounds": 1, "generate.temperature": 1.2, "train.max_steps": 3},
    }
    out = _study(_study_file(tmp_path, overrides={"output_dir": "x"}), "--output_dir", tmp_path / "w")
    assert out.returncode == 2 and "overrides: 'seed' and 'output_dir' are the study's" in out.stderr


@pytest.mark.e2e
def test_slurm_array_script(tmp_path):
    path = _study_file(tmp_path, slurm={"partition": "cpu", "cpus_per_task": 2})
    out = _study(path, "--output_dir", tmp_path / "out", "--slurm")
    assert out.returncode == 0, out.stderr
    script = (tmp_path / "out" / "study.sbatch").read_text()
    assert (
        "#SBATCH --array=0-5" in script
        and "#SBATCH --partition=cpu" in script
        and "#SBATCH --cpus-per-task=2" in script
    )
    assert "--only $SLURM_ARRAY_TASK_ID" in script and "--aggregate" in script
    assert subprocess.run(["bash", "-n", tmp_path / "out" / "study.sbatch"]).returncode == 0
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert [(p["arm"], p["seed"]) for p in plan] == [
        ("cool", 0),
        ("cool", 1),
        ("cool", 2),
        ("hot", 0),
        ("hot", 1),
        ("hot", 2),
    ]
    # one array task runs exactly its run
    task = _study(tmp_path / "out" / "study_file.yaml", "--output_dir", tmp_path / "out", "--only", "4")
    assert task.returncode == 0, task.stderr[-2000:]
    assert (tmp_path / "out" / "hot" / "seed_1" / "metrics.jsonl").exists()
    assert not (tmp_path / "out" / "cool" / "seed_0").exists()


@pytest.mark.unit
def test_docs_verdict_tables_agree_with_their_bundles(tmp_path):
    """Every verdict and arms table in README.md and docs/ is what its committed bundle says; an edited one is
    caught."""
    from selfimprove.tools.results import blocks, render

    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for doc in docs:
        text = doc.read_text()
        assert render(text, REPO / "results") == text, f"{doc.name}: run python scripts/verdict_tables.py"
    marked = [(doc, name) for doc in docs for name in blocks(doc.read_text())]
    assert marked, "no verdict table in the docs"
    doc, name = marked[0]
    tampered = doc.read_text().replace("**supported**", "**contradicted**").replace("**inconclusive**", "**supported**")
    tampered = tampered.replace("**unmatched**", "**supported**")
    assert render(tampered, REPO / "results") != tampered
    studies = (REPO / "docs" / "studies.md").read_text()
    arms = studies[studies.index("<!-- arms: loop -->") : studies.index("<!-- /arms: loop -->")]
    assert "| per_rule_quota | eval/accuracy/ood (%) | 5 |" in arms  # a per-arm row, per-seed values beside it
    assert render(studies.replace(arms, arms.replace(" / ", " | ", 1)), REPO / "results") == studies


@pytest.mark.unit
def test_a_rounds_table_is_each_rounds_mean_over_seeds():
    from selfimprove.tools.results import rounds_table

    acc = "eval/accuracy/id"
    result = {
        "arms": {"a": {"0": {acc: {"mean": 0.5}}, "1": {acc: {"mean": 0.625}, "x": {"mean": 2.0}}}},
        "seeds": [0, 1],
        "runs": {},
    }
    out = rounds_table(result, "results/s/study.json")
    assert "| arm | metric | round 0 | round 1 |" in out
    assert "| a | eval/accuracy/id (%) | 50.0 | 62.5 |" in out and "| a | x | - | 2.000 |" in out


@pytest.mark.unit
def test_the_study_sizes_table_is_its_measurements():
    """docs/studies.md's "Study sizes": a full-run time is the committed bundle's own (results/<study>/study.json);
    a one-seed time is the committed measurement of the file as shipped, and its estimate that time x the rounds of
    two runs the study's seeds take over those of one seed, within 40 minutes."""
    measured = json.loads((REPO / "results" / "study_sizes" / "one_seed_times.json").read_text())
    shipped = {m["file"]: m for m in measured if m["as_shipped"]}
    text = (REPO / "docs" / "studies.md").read_text()
    rows = [line.split("|")[1:-1] for line in text.split("## Study sizes")[1].split("\n## ")[0].splitlines()]
    full = one_seed = 0
    for cells in (c for c in rows if len(c) == 6 and c[0].strip().endswith(".yaml")):
        name, runs, seconds, minutes = cells[0].strip(), cells[3].strip(), cells[4].strip(), cells[5].strip()
        arms, seeds = (int(x) for x in cells[1].split("×"))
        if runs.isdigit():
            result = json.loads((REPO / "results" / Path(name).stem / "study.json").read_text())
            assert int(runs) == round(result["timing"]["total_s"] / 60), name
            assert len(result["runs"]) == arms * seeds, name
            full += 1
        if seconds.isdigit():
            m = shipped[name]
            assert m["wall_s"] == int(seconds) and len(m["runs"]) == arms, name
            waves = math.ceil(seeds * arms / 2) / math.ceil(arms / 2)
            assert int(minutes) == round(int(seconds) * waves / 60) <= 40, name
            one_seed += 1
    assert one_seed == len(shipped) and full >= 4
