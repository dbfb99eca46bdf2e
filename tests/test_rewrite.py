"""The rewrite task: rules applied by hand, held-out rules never in training, the knobs doing what they say."""

import pytest

from selfimprove.core.config import ConfigError, load_recipe
from selfimprove.registry import build_task
from selfimprove.tasks.rewrite import apply_rules, parse_prompt, render

pytestmark = pytest.mark.unit


def _task(**kw):
    return build_task(load_recipe(None, {"task.name": "rewrite", **{f"task.rewrite.{k}": v for k, v in kw.items()}}))


def test_rules_by_hand():
    # leftmost occurrence only, in order; a deletion; a rule that does not apply changes nothing
    assert apply_rules([("ab", "ba"), ("c", "")], "cabca") == "baca"  # cabca -> cbaca -> baca
    assert apply_rules([("x", "y")], "abc") == "abc"
    assert apply_rules([("a", "aa"), ("aa", "b")], "ab") == "bb"  # ab -> aab -> bb
    prompt = render([("ab", "ba"), ("c", "")], "cabca")
    assert prompt == "ab>ba;c>|cabca=" and parse_prompt(prompt) == ([("ab", "ba"), ("c", "")], "cabca")
    assert parse_prompt("ab>ba|cab") is None


def test_every_label_is_the_rules_applied_and_held_out_rules_stay_out():
    t = _task(
        seed_size=500, step_mix=[1, 1, 1], train_rules=16, ood_rules=16, prompts_per_round=200, eval_size_per_level=30
    )
    assert not set(t.train) & set(t.ood) and len(set(t.train)) == 16
    seed = t.seed_data()
    assert all(r["completion"] == apply_rules(*parse_prompt(r["prompt"])) for r in seed)
    assert {r["difficulty"] for r in seed} == {1, 2, 3}
    trained = {rule for r in seed + t.round_prompts(1, [], set()) for rule in parse_prompt(r["prompt"])[0]}
    assert trained <= set(t.train)
    evals = t.eval_sets()
    for r in evals:
        rules = set(parse_prompt(r["prompt"])[0])
        assert rules <= (set(t.train) if r["split"] == "id" else set(t.ood))
        assert t.is_correct(apply_rules(*parse_prompt(r["prompt"])), r["reference"])
    assert {r["split"] for r in evals} == {"id", "ood"} and len(evals) == 2 * 3 * 30
    # no-ops happen at about the configured share (first rule absent from the input)
    noop = sum(parse_prompt(r["prompt"])[0][0][0] not in parse_prompt(r["prompt"])[1] for r in seed) / len(seed)
    assert 0.1 < noop < 0.3


def test_knobs_nest_and_noise_is_counted():
    few, many = _task(train_rules=8), _task(train_rules=64)
    assert many.train[:8] == few.train and many.ood == few.ood  # arms of one seed share held-out rules
    noisy = _task(seed_size=2000, label_noise=0.3).seed_data()
    wrong = [r for r in noisy if r["completion"] != apply_rules(*parse_prompt(r["prompt"]))]
    assert wrong == [r for r in noisy if r["label_noisy"]]
    assert 0.25 < len(wrong) / len(noisy) < 0.35
    assert all(
        len(r["completion"]) == len(apply_rules(*parse_prompt(r["prompt"])))
        or apply_rules(*parse_prompt(r["prompt"])) == ""
        for r in wrong
    )  # one character changed
    clean = _task(seed_size=2000).seed_data()
    assert [r["prompt"] for r in clean] == [r["prompt"] for r in noisy]  # noise changes labels, not problems


def test_eval_metrics_and_bad_config():
    t = _task(eval_size_per_level=2, eval_max_steps=2)
    rows = [{**r, "correct": r["split"] == "id" and r["difficulty"] == 1} for r in t.eval_sets()]
    m = t.eval_metrics(rows)
    assert m["eval/accuracy/id"] == 0.5 and m["eval/accuracy/ood"] == 0.0 and m["eval/accuracy/id_s1"] == 1.0
    with pytest.raises(ConfigError, match="step_mix"):
        _task(step_mix=[0, 0])
    with pytest.raises(ConfigError, match="possible rules"):
        _task(alphabet=2, rule_max_len=1, train_rules=10)


def test_round_prompts_always_have_an_answer():
    """An empty answer reads as 'no reference' to the verifier judge, so rounds never pose one (a deletion rule can
    empty a short input)."""
    t = _task(prompts_per_round=3000, min_input=1, max_input=2)
    rows = t.round_prompts(1, [], set())
    assert len(rows) == 3000 and all(r["reference"] for r in rows)
    assert any(r["completion"] == "" for r in _task(seed_size=3000, min_input=1, max_input=2).seed_data())


def test_held_out_parts_stay_out_of_every_arm_and_their_rules_are_the_ood_parts_split():
    arms = {
        n: _task(train_rules=n, held_out_parts=8, eval_id_rules=8, eval_size_per_level=20, eval_max_steps=2)
        for n in (8, 128)
    }
    t = arms[128]
    assert len(t.parts_lefts) == len(t.parts_rights) == 8
    used = t.train + t.ood
    assert not {x for x, _ in used} & t.parts_lefts and not {y for _, y in used} & t.parts_rights
    assert set(t.ood_parts) == {(x, y) for x in t.parts_lefts for y in t.parts_rights if x != y}
    evals = t.eval_sets()
    parts_rows = [r for r in evals if r["split"] == "ood_parts"]
    assert len(parts_rows) == 2 * 20
    assert all(set(parse_prompt(r["prompt"])[0]) <= set(t.ood_parts) for r in parts_rows)
    assert evals == arms[8].eval_sets()  # every arm of a seed gets the same tests
    assert t.proposed_row(render([t.ood_parts[0]], "abcd"))[1] == "held_out"
    rows = [{**r, "correct": r["split"] == "ood_parts" and r["difficulty"] == 2} for r in evals]
    m = t.eval_metrics(rows)
    assert m["eval/accuracy/ood_parts"] == 0.5 and m["eval/accuracy/ood_parts_s2"] == 1.0
    assert m["eval/accuracy/ood"] == 0.0
    # without held-out parts, the universe and the eval sets are what they always were
    plain = _task()
    assert plain.ood[:3] == [("b", "a"), ("ed", ""), ("d", "a")] and plain.ood_parts == []
    assert {r["split"] for r in plain.eval_sets()} == {"id", "ood"}
    with pytest.raises(ConfigError, match="held_out_parts"):
        _task(held_out_parts=21)


def test_systematic_noise_misreads_some_rules_always_the_same_way():
    t = _task(seed_size=2000, label_noise=0.3, label_noise_kind="systematic")
    assert len(t.misread) == round(64 * 0.3 / 0.8) == 24
    rows = t.seed_data()
    for r in rows:
        rules, text = parse_prompt(r["prompt"])
        misread = apply_rules([t.misread.get(rule, rule) for rule in rules], text)
        assert r["completion"] == misread and r["label_noisy"] == (misread != apply_rules(rules, text))
        # a misread rule that applies always gives a wrong label; the other rules never do
        assert r["label_noisy"] == (rules[0] in t.misread and rules[0][0] in text)
    assert 0.25 < sum(r["label_noisy"] for r in rows) / len(rows) < 0.35
    # the same problems as the clean and random-noise arms: only labels change
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in _task(seed_size=2000).seed_data()]
    with pytest.raises(ConfigError, match="misread rules"):
        _task(label_noise=0.9, noop_share=0.5, label_noise_kind="systematic")
