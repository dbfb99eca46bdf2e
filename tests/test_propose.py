"""The propose stage: each filter on hand-made prompts, the learnability bounds, requests from templates, recipe
checks, and a real run through the CLI (lineage columns, prompt metrics, resume after a kill mid-propose)."""

import json
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import REPO, finished_run, run_cli

from selfimprove.core.config import ProposeConfig, load_recipe, recipe_hash
from selfimprove.core.typed_yaml import ConfigError
from selfimprove.registry import build_task
from selfimprove.stages.propose import fill, filters, requests
from selfimprove.tasks import proposal_examples
from selfimprove.tasks.countdown import CountdownTask, reachable, solvable

RECIPE = REPO / "recipes" / "propose" / "countdown_cpu.yaml"


def _countdown(**kw):
    cfg = SimpleNamespace(min_operands=2, max_operands=3, max_number=9, **kw)
    return CountdownTask(cfg, seed=0)


@pytest.mark.unit
def test_countdown_solver_matches_hand_enumeration():
    # 1,2: 1+2 2+1 1-2 2-1 1*2 2*1 -> {3, -1, 1, 2}
    assert reachable((1, 2)) == {3, -1, 1, 2}
    assert solvable([3, 5, 7], 22) and solvable([3, 5, 7], 3 * 7 - 5) and not solvable([1, 1], 5)


@pytest.mark.unit
@pytest.mark.parametrize(
    "text, reason",
    [
        ("3,5,7>22:", ""),  # 3*5+7
        ("  3,5>8:\n", ""),  # whitespace around it is not part of the problem
        ("3,5>100:", "unsolvable"),
        ("1,2,3,4>10:", "size"),  # more numbers than a training problem has
        ("7>7:", "size"),
        ("0,5>5:", "numbers"),  # numbers are 1..max_number
        ("12,5>17:", "numbers"),
        ("3,5>", "malformed"),
        ("3+5", "malformed"),
    ],
)
def test_validity_filter_on_hand_made_proposals(text, reason):
    rows, reasons = filters.valid(_countdown(), [text], [True])
    assert reasons == [reason]
    if not reason:
        assert rows[0] == {"prompt": text.strip(), "difficulty": text.count(",") + 1, "reference": text.strip()}


@pytest.mark.unit
def test_an_unfinished_proposal_is_dropped_before_the_task_reads_it():
    assert filters.valid(_countdown(), ["3,5>8:"], [False])[1] == ["unfinished"]


@pytest.mark.unit
def test_novelty_filter_decontaminates_then_drops_earlier_and_repeated_prompts():
    cfg = ProposeConfig(novelty="exact")
    cands = ["1,2>3:", "4,5>9:", "4,5>9:", "6,7>13:", " 6,8>14: "]
    reasons = filters.novel(cands, protected=["1,2>3:"], earlier=["6,8>14:"], cfg=cfg, unit="char")
    # eval prompt; new; repeat of the previous candidate; new; an earlier round's prompt (whitespace aside)
    assert reasons == ["contaminated", "", "not_novel", "", "not_novel"]


@pytest.mark.unit
def test_minhash_novelty_catches_near_duplicates_that_exact_lets_through():
    base = "Tom has 12 apples and gives 5 of them to his sister. How many apples does Tom have left now?"
    near = base.replace("sister", "sisters")
    other = "A train leaves at 9 and arrives at 11:30. How long is the trip in minutes, counting the stops?"
    exact = filters.novel([near, other], [], [base], ProposeConfig(novelty="exact"), "word")
    minhash = filters.novel([near, other], [], [base], ProposeConfig(novelty="minhash", novelty_threshold=0.6), "word")
    assert exact == ["", ""] and minhash == ["not_novel", ""]


@pytest.mark.unit
def test_pass_rates_and_agreement_by_hand():
    task = _countdown()
    rows = [{"reference": "3,5,7>22:"}, {"reference": "1,2>3:"}]
    samples = [
        [{"completion": c} for c in ("3*5+7", "7+3*5", "3+5+7", "oops")],  # 2 of 4 correct
        [{"completion": c} for c in ("1+2", "2+1", "1+2", "2+1")],  # 4 of 4
    ]
    assert filters.pass_rates(task, rows, samples, "pass_rate").tolist() == [0.5, 1.0]
    # label-free: the share agreeing with the most common answer ('oops' has none and never agrees)
    assert filters.pass_rates(task, rows, samples, "agreement").tolist() == [0.25, 0.5]
    no_ref = [{"reference": ""}]
    assert filters.pass_rates(task, no_ref, [samples[1]], "auto").tolist() == [0.5]  # auto: agreement without one


@pytest.mark.unit
def test_learnability_bounds_are_strict():
    rates = np.array([0.0, 0.125, 0.5, 0.875, 1.0])
    assert filters.learnable(rates, 0.0, 1.0) == ["too_hard", "", "", "", "too_easy"]
    assert filters.learnable(rates, 0.125, 0.875) == ["too_hard", "too_hard", "", "too_easy", "too_easy"]


@pytest.mark.unit
def test_generic_proposals_go_through_the_prompt_template(tmp_path):
    from selfimprove.tasks.generic import GenericTask

    (tmp_path / "p.jsonl").write_text(json.dumps({"q": "1+1?", "a": "2"}) + "\n")
    cfg = load_recipe(
        None,
        {
            "task.name": "generic",
            "task.generic.prompts": str(tmp_path / "p.jsonl"),
            "task.generic.prompt_field": "q",
            "task.generic.answer_field": "a",
            "task.generic.eval_id": str(tmp_path / "p.jsonl"),
            "task.generic.seed_data": str(tmp_path / "p.jsonl"),
            "task.generic.prompt_template": "Q: {{ q }}\nA:",
        },
    ).task.generic
    task = GenericTask(cfg, 0)
    row, why = task.proposed_row("  What is 2+3?  ")
    assert why == "" and row == {
        "prompt": "Q: What is 2+3?\nA:",
        "source_prompt": "What is 2+3?",
        "reference": "",
        "difficulty": 0,
    }
    assert task.proposed_row("   ") == (None, "empty")
    cfg.prompt_template = "{{ q }} ({{ topic }})"  # a column a bare proposal does not have
    assert GenericTask(cfg, 0).proposed_row("What is 2+3?") == (None, "template")


def _ctx(mode, **propose):
    recipe = SimpleNamespace(propose=ProposeConfig(mode=mode, **propose))
    return SimpleNamespace(recipe=recipe, task=_countdown(), history=lambda k: [])


@pytest.mark.unit
def test_evolve_requests_cycle_the_operations_and_record_the_parent():
    rng = np.random.default_rng(0)
    asks = requests(_ctx("evolve", operations=["deepen", "steps"]), 1, 4, ["P0 {prompt}", "P1"], rng)
    assert [a["operation"] for a in asks] == ["evolve_deepen", "evolve_steps"] * 2
    for a in asks:
        assert a["parent_prompt"] in ("P0 {prompt}", "P1")
        assert a["request"].rstrip().endswith(a["parent_prompt"])  # the built-in template ends with the task
        assert "{prompt}" not in a["request"].replace(a["parent_prompt"], "")  # filled once, parent left literal


@pytest.mark.unit
def test_self_instruct_requests_show_distinct_earlier_prompts(tmp_path):
    (tmp_path / "self_instruct.txt").write_text("Examples:\n{examples}\nWrite one more.")
    pool = ["alpha", "beta", "gamma", "delta"]
    asks = requests(_ctx("self_instruct", fewshot=3, templates=str(tmp_path)), 1, 5, pool, np.random.default_rng(1))
    for a in asks:
        shown = [line.split(": ", 1)[1] for line in a["request"].splitlines() if line.startswith("Task ")]
        assert len(shown) == 3 == len(set(shown)) and set(shown) <= set(pool)
        assert a["request"].startswith("Examples:\n") and a["request"].endswith("Write one more.")


@pytest.mark.unit
def test_task_native_requests_ask_for_training_sizes():
    asks = requests(_ctx("task_native"), 1, 50, [], np.random.default_rng(0))
    assert {a["request"] for a in asks} == {"?2", "?3"} and {a["operation"] for a in asks} == {"task_native"}


@pytest.mark.unit
def test_fill_substitutes_once():
    assert fill("Rewrite: {prompt}!", "{prompt}", "say {prompt}") == "Rewrite: say {prompt}!"


@pytest.mark.unit
@pytest.mark.parametrize("name", ["countdown", "addition", "rewrite"])
def test_proposal_examples_are_valid_and_decontaminated(name):
    task = _builtin(name)
    first = proposal_examples(task, 200, set(), np.random.default_rng(0))
    banned = {first[0]["completion"]}
    rows = proposal_examples(task, 200, banned, np.random.default_rng(0))
    assert len(rows) == 200 and all(r["prompt"] == f"?{r['difficulty']}" for r in rows)
    assert all(task.proposed_row(r["completion"])[1] == "" for r in rows)
    assert not banned & {r["completion"] for r in rows}


def _builtin(name, **task):
    return build_task(load_recipe(None, {"task.name": name, **{f"task.{name}.{k}": v for k, v in task.items()}}))


@pytest.mark.unit
@pytest.mark.parametrize(
    "text, reason, row",
    [
        # reversed operands: 57 + 8 = 65 -> "75+8=", answer "56" padded to 3 digits
        ("75+8=", "", {"prompt": "75+8=", "difficulty": 2, "reference": "560"}),
        ("  75+8= ", "", {"prompt": "75+8=", "difficulty": 2, "reference": "560"}),
        ("750+8=", "malformed", None),  # a trailing 0 is a leading zero of the number
        ("75+8", "malformed", None),
        ("7a+8=", "malformed", None),
        ("1234567890123+1=", "size", None),  # longer than any eval problem
    ],
)
def test_addition_proposals_by_hand(text, reason, row):
    task = _builtin("addition")
    assert task.proposed_row(text) == (row, reason)


@pytest.mark.unit
def test_addition_requests_follow_the_curriculum():
    task = _builtin("addition", seed_max_digits=3)
    rng = np.random.default_rng(0)
    assert set(task.propose_requests(40, rng)) == {"?1", "?2", "?3"}  # k = 0: the seed's range
    assert set(task.propose_requests(40, rng, 1, [])) == {"?4"}  # round 1's new digit count
    written = [task.write_problem("?4", rng) for _ in range(20)]
    assert all(task.proposed_row(t)[0]["difficulty"] == 4 for t in written)


@pytest.mark.unit
@pytest.mark.parametrize(
    "text, reason",
    [
        ("ab>ba|cabca=", ""),
        ("ab>ba;c>|cabca=", ""),
        ("ab>ba|cab=", "size"),  # input shorter than min_input
        ("ab>ab|cabca=", "rule"),  # a rule that changes nothing
        ("abcdef>a|cabca=", "rule"),  # longer than rule_max_len
        ("zz>a|cabca=", "letters"),  # outside the task's alphabet
        ("ab>|ab=", "size"),
        ("abc>|abcab=", "rule"),  # rule_max_len is 2
        ("a>|aaaaa=", ""),  # deletes one a
        ("a>|a=", "size"),
        ("ab>|abab=", ""),
        ("ab>;ab>|abab=", "empty_answer"),  # a round never poses an empty answer
        ("ab>ba", "malformed"),
    ],
)
def test_rewrite_proposals_by_hand(text, reason):
    task = _builtin("rewrite", min_input=4)
    task.ood = []  # the held-out rules are the next test's
    row, why = task.proposed_row(text)
    assert why == reason
    if not reason:
        rules, source = text.split("|")[0].split(";"), text.split("|")[1][:-1]
        answer = source
        for rule in rules:
            x, y = rule.split(">")
            answer = answer.replace(x, y, 1)
        assert row == {"prompt": text, "difficulty": len(rules), "reference": answer, "attribute": rules[0]}


@pytest.mark.unit
def test_rewrite_proposals_never_use_a_held_out_rule():
    task = _builtin("rewrite")
    x, y = task.ood[0]
    source = (x * 8)[: task.cfg.max_input]
    assert task.proposed_row(f"{x}>{y}|{source}=")[1] == "held_out"
    fresh = next((a, b) for a in task.letters for b in task.letters if a != b and (a, b) not in task.ood)
    assert task.proposed_row(f"{fresh[0]}>{fresh[1]}|{fresh[0] * task.cfg.min_input}=")[1] == ""
    assert task.proposed_row(f"{fresh[0]}>{fresh[1]};{x}>{y}|{source}=")[1] == "held_out"  # in any position


@pytest.mark.unit
def test_prompt_metrics_by_hand():
    from selfimprove.core.config import MonitorConfig
    from selfimprove.metrics.prompts import novelty, prompt_metrics, propose_mix

    # 4 prompts, 1 posed in an earlier round (exact), 1 a near copy of an earlier one (Jaccard of char 3-grams >= 0.9)
    earlier = ["1,2>3:", "9,8,7,6,5,4,3,2>44:"]
    texts = ["1,2>3:", "9,8,7,6,5,4,3,2>45:", "4,4>8:", "5,6>30:"]
    assert novelty(texts, earlier, 0.5, 3, "char") == {"novelty": 0.75, "near_novelty": 0.5}
    assert novelty(texts, [], 0.9, 3, "char") == {"novelty": 1.0, "near_novelty": 1.0}
    # proposed = came through the propose stage (it has an operation), whoever wrote it
    rows = [{"difficulty": d, "operation": op} for d, op in ((2, ""), (8, ""), (2, "task_native"), (2, "task_written"))]
    m = prompt_metrics(rows, texts, earlier, MonitorConfig(distinct_n=[1]), 1000)
    assert m["prompts/count"] == 4 and m["prompts/proposed_share"] == 0.5
    assert m["prompts/difficulty"] == 3.5 and m["prompts/length"] == np.mean([len(t) for t in texts])
    assert m["prompts/distinct_1"] == len(set("".join(texts))) / len("".join(texts))
    mix = propose_mix({"candidates": 8, "used": 1, "reasons": {"kept": 2, "unsolvable": 6}}, [
        {"pass_rate": 0.25}, {"pass_rate": 0.75}])  # fmt: skip
    assert mix["prompts/propose/kept"] == 0.25 and mix["prompts/propose/unsolvable"] == 0.75
    assert mix["prompts/propose/too_easy"] == 0.0 and mix["prompts/propose/pass_rate"] == 0.5


@pytest.mark.unit
def test_recipe_checks_refuse_what_cannot_run():
    with pytest.raises(ConfigError, match="pass_rate_min"):
        load_recipe(str(RECIPE), {"propose.pass_rate_min": 0.9, "propose.pass_rate_max": 0.5})
    with pytest.raises(ConfigError, match="from-scratch policy cannot"):
        load_recipe(str(RECIPE), {"propose.mode": "evolve", "judge.judges": ["majority"]})
    with pytest.raises(ConfigError, match="reference answers"):
        load_recipe(str(RECIPE), {"propose.mode": "evolve", "model.path": "x"})
    with pytest.raises(ConfigError, match="propose.model 'task'"):
        load_recipe(str(RECIPE), {"propose.mode": "evolve", "propose.model": "task", "judge.judges": ["majority"]})
    with pytest.raises(ConfigError, match=r"own problems \(addition, countdown, rewrite\); task .generic. does not"):
        load_recipe(None, {"task.name": "generic", "propose.mode": "task_native"})


@pytest.mark.unit
def test_a_recipe_without_propose_keeps_its_fingerprint():
    base = load_recipe(str(REPO / "recipes" / "countdown" / "quality_only_cpu.yaml"))
    assert recipe_hash(base) == "bb3d3b912990"  # the fingerprint before the propose stage existed
    assert recipe_hash(load_recipe(str(RECIPE))) != recipe_hash(base)


# A real run: the shipped recipe, shrunk (2 rounds, 2,000 seed problems, 300 bootstrap steps).
SHRUNK = [
    "--rounds", "2",
    "--task.countdown.seed_size", "2000",
    "--task.countdown.prompts_per_round", "200",
    "--task.countdown.eval_size_per_level", "50",
    "--train.bootstrap_steps", "300",
    "--train.max_steps", "30",
    "--propose.candidates", "400",
    "--propose.seed_examples", "500",
    "--monitor.probe_size", "20",
    "--monitor.alarms", "[{metric: prompts/novelty, drop: 0.01, vs: previous, action: warn}]",
]  # fmt: skip


@pytest.fixture(scope="module")
def propose_run(tmp_path_factory):
    return finished_run(tmp_path_factory, "propose", RECIPE, *SHRUNK)


@pytest.mark.e2e
def test_propose_stage_counts_lineage_and_prompt_metrics(propose_run):
    from selfimprove.core.rows import load_rows

    run = propose_run
    for k in (1, 2):
        meta = json.loads((run / f"round_{k:02d}" / "propose" / "meta.json").read_text())
        cands = load_rows(run / f"round_{k:02d}" / "propose" / "data")
        kept = load_rows(run / f"round_{k:02d}" / "propose" / "prompts")
        assert meta["candidates"] == len(cands) == 400 and sum(meta["reasons"].values()) == 400
        assert meta["kept"] == len(kept) == sum(c["kept"] for c in cands) == meta["reasons"].get("kept", 0)
        for c in cands:
            assert c["kept"] == (c["propose_reason"] == "")
            assert (0 < c["pass_rate"] < 1) if c["kept"] else True
        gen = load_rows(run / f"round_{k:02d}" / "generate" / "data")
        prompts = {r["prompt_id"]: r for r in gen}
        assert len(prompts) == 200  # the task's prompt count, proposals first
        proposed = [r for r in prompts.values() if r["proposed_by"] != "task"]
        assert len(proposed) == meta["used"] == min(100, len(kept))
        assert {r["proposed_by"] for r in proposed} <= {f"round_{k - 1:02d}/train/model"}
        assert all(r["operation"] == "task_native" and r["reference"] == r["prompt"] for r in proposed)
        by_text = {r["prompt"]: r for r in kept}
        assert all(by_text[r["prompt"]]["pass_rate"] == r["pass_rate"] for r in proposed)
    m = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    for key in ("prompts/ngram_vendi", "prompts/distinct_2", "prompts/novelty", "prompts/difficulty",
                "prompts/propose/kept", "prompts/propose/too_hard", "prompts/proposed/pass_rate",
                "complexity/proposed/ifd", "time/propose_s"):  # fmt: skip
        assert key in m, key
    assert m["prompts/proposed_share"] == meta["used"] / m["prompts/count"]  # of the distinct prompts
    # Alarms read prompt metrics like any other: round 1 is all new (no earlier round); round 2 repeats some task
    # prompts of round 1, so its novelty falls and the alarm fires then, not before.
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[1])
    assert first["prompts/novelty"] == 1.0 > m["prompts/novelty"]
    fired = json.loads((run / "round_02" / "monitor" / "alarms.json").read_text())
    assert [a["metric"] for a in fired] == ["prompts/novelty"] and m["alarm/prompts/novelty"] == 1
    assert json.loads((run / "round_01" / "monitor" / "alarms.json").read_text()) == []
    assert not {r["prompt"] for r in proposed} & {r["prompt"] for r in prompts.values() if r["proposed_by"] == "task"}


@pytest.mark.e2e
def test_kept_proposals_train_the_proposer(propose_run):
    from selfimprove.core.rows import load_rows

    trained = load_rows(propose_run / "round_02" / "train" / "data")
    kept = {r["prompt_id"] for k in (1, 2) for r in load_rows(propose_run / f"round_{k:02d}" / "propose" / "prompts")}
    ids = [r["prompt_id"].removeprefix("propose:") for r in trained if r["prompt_id"].startswith("propose:")]
    assert set(ids) <= kept and len(set(ids)) > 1
    share = len(ids) / len(trained)
    assert share == pytest.approx(0.1, abs=1e-9)  # propose.train_share of the round's rows


@pytest.mark.e2e
def test_resume_after_a_kill_mid_propose_matches_uninterrupted(propose_run, tmp_path):
    from test_loop import _artifacts

    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "selfimprove", "run", str(RECIPE), "--output_dir", str(run), *SHRUNK]
    env = {**os.environ, "SELFIMPROVE_FAULT": "round_02/propose:before_done"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (run / "round_02" / "propose" / "DONE").exists()
    out = run_cli("run", RECIPE, "--output_dir", run, *SHRUNK)
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = _artifacts(run), _artifacts(propose_run)
    a.update({k: v for k, v in _propose_rows(run).items()})
    b.update({k: v for k, v in _propose_rows(propose_run).items()})
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key], key


def _propose_rows(run):
    from selfimprove.core.rows import load_rows

    return {str(p.relative_to(run)): load_rows(p) for p in sorted(run.glob("round_*/propose/prompts"))}


@pytest.mark.e2e
@pytest.mark.parametrize("writer", ["policy", "task"])
def test_addition_proposes_through_the_real_loop(tmp_path, writer):
    """Task-native proposing on a second built-in task, label-free (vote agreement), written by the policy or, as
    the filters-only control, by the task itself."""
    from selfimprove.core.rows import load_rows

    run = tmp_path / "run"
    out = run_cli(
        "run", REPO / "tests" / "tiny_addition.yaml", "--output_dir", run, "--rounds", "1",
        "--propose.mode", "task_native", "--propose.model", writer, "--propose.share", "0.5",
        "--propose.candidates", "60", "--propose.seed_examples", "100", "--propose.learnability", "agreement",
        "--propose.learnable_samples", "4", "--propose.pass_rate_max", "1.0",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    seed = load_rows(run / "seed_data" / "data")
    assert sum(r["prompt"].startswith("?") for r in seed) == 100
    task = _builtin("addition", seed_max_digits=3, eval_max_digits=5)
    cands = load_rows(run / "round_01" / "propose" / "data")
    assert len(cands) == 60 and {c["request"] for c in cands} == {"?4"}  # round 1's new digit count
    later = {"", "not_novel", "contaminated", "too_hard", "too_easy"}  # the filters after the task's own check
    for c in cands:
        why = task.proposed_row(c["text"])[1]
        assert c["propose_reason"] == why if why else c["propose_reason"] in later
    kept = load_rows(run / "round_01" / "propose" / "prompts")
    assert all(r["reference"] == task.proposed_row(r["prompt"])[0]["reference"] for r in kept)
    op = "task_written" if writer == "task" else "task_native"
    assert {r["operation"] for r in kept} <= {op} and {r["proposed_by"] == "task" for r in kept} <= {writer == "task"}
    if writer == "task":  # the task writes only valid problems: only the novelty and learnability filters drop any
        assert {c["propose_reason"] for c in cands} <= {"", "not_novel", "too_easy", "too_hard"} and kept
    gen = {r["prompt_id"]: r for r in load_rows(run / "round_01" / "generate" / "data")}
    used = [r for r in gen.values() if r["operation"]]
    assert len(gen) == 40 and len(used) == min(20, len(kept))
    m = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert m["prompts/proposed_share"] == len(used) / m["prompts/count"]
    proposal_tokens = sum(c["num_tokens"] for c in cands)
    assert (proposal_tokens > 0) == (writer == "policy") and m["compute/proposal_tokens"] == proposal_tokens
    parts = ("generated_tokens", "proposal_tokens", "learnability_tokens")
    assert m["compute/sampled_tokens"] == sum(m[f"compute/{q}"] for q in parts) > m["compute/generated_tokens"]
