"""The DPO path: pairs from the filter, TRL DPOTrainer with the previous round as reference; the self-rewarding recipe
as a CPU smoke run; chat-template prompts identical in generation and training."""

import json

import pytest

from conftest import REPO, run_cli


def test_self_rewarding_recipe_runs_dpo_on_its_own_judgements(tmp_path):
    run = tmp_path / "sr"
    proc = run_cli("run", REPO / "recipes" / "self_rewarding" / "tiny_cpu.yaml", "--output_dir", run, "--rounds", 1,
                   "--train.bootstrap_steps", 100)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((run / "round_01" / "train" / "meta.json").read_text())
    assert meta["method"] == "dpo" and meta["rows"] == meta["steps"] * meta["global_batch"]
    assert meta["losses"][0] == pytest.approx(0.6931, abs=0.02)  # DPO starts at log 2: policy == reference
    assert meta["last_loss"] < meta["losses"][0]
    filt = json.loads((run / "round_01" / "filter" / "meta.json").read_text())
    assert filt["pairs"] > 0
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[1]["quality/unparsed_rate/llm"] == 1.0  # the tiny policy cannot judge: counted, scored neutral
    from selfimprove.rundir import load_rows

    pairs = load_rows(run / "round_01" / "filter" / "pairs")
    assert all(p["score_chosen"] > p["score_rejected"] and p["chosen"] != p["rejected"] for p in pairs)


def test_dpo_refuses_a_recipe_without_pairs():
    from selfimprove.config import load_recipe
    from selfimprove.typed_yaml import ConfigError

    with pytest.raises(ConfigError, match="filter.pairs is 'none'"):
        load_recipe(None, {"train.method": "dpo"})


def test_chat_template_prompts_match_between_generation_and_training(tiny_policy):
    from selfimprove.generate import chat_prompts
    from selfimprove.model import load_tokenizer
    from selfimprove.train import tokenize_rows

    tok = load_tokenizer(tiny_policy)
    tok.chat_template = "{% for m in messages %}<s>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}={% endif %}"
    rows = [{"prompt": "12+3", "completion": "51"}]
    assert chat_prompts(tok, ["12+3"]) == ["<s>12+3="]
    out = tokenize_rows(rows, tok, chat=True)
    prompt_ids = tok("<s>12+3=", add_special_tokens=False)["input_ids"]
    assert out["input_ids"][0][:len(prompt_ids)] == prompt_ids  # one BOS, from the template, not two
    assert out["completion_mask"][0] == [0] * len(prompt_ids) + [1] * 3  # "5", "1", EOS
