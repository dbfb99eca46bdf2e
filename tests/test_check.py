"""``selfimprove check``: every shipped recipe is ready (as --smoke would run it; the CPU recipes also as shipped), and
each broken variant is refused with its problem named, before anything is trained or generated."""

import json
import sys

import pytest
from conftest import RECIPE_FILES, REPO, TINY_RECIPE, write_jsonl

from selfimprove.cli import main
from selfimprove.core.config import load_recipe

RECIPES = RECIPE_FILES
CPU_RECIPES = [p for p in RECIPES if "real" not in p.parts]


def _check(capsys, tmp_path, *args) -> tuple[int, dict, str]:
    out = tmp_path / "report.json"
    code = main(["check", *map(str, args), "--json", str(out)])
    text = capsys.readouterr().out
    return code, (json.loads(out.read_text()) if out.exists() else {}), text


@pytest.mark.e2e
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_shipped_recipes_are_ready_with_smoke(recipe, capsys, tmp_path):
    code, report, text = _check(capsys, tmp_path, recipe, "--smoke", "--output_dir", tmp_path / "run")
    assert code == 0, report.get("problems")
    assert "ready" in text and len(report["examples"]) == 2
    rounds = [p["round"] for p in report["plan"]]
    shipped = min(load_recipe(str(recipe)).rounds, 2)  # --smoke runs at most 2 rounds
    assert rounds == list(range(shipped + 1))
    assert all(p["samples"] > 0 and p["train_rows"] > 0 for p in report["plan"][1:])
    assert not (tmp_path / "run").exists()  # a preflight writes nothing


@pytest.mark.unit
@pytest.mark.parametrize("recipe", CPU_RECIPES, ids=lambda p: p.stem)
def test_cpu_recipes_are_ready_as_shipped(recipe, capsys, tmp_path):
    code, report, _ = _check(capsys, tmp_path, recipe, "--output_dir", tmp_path / "run")
    assert code == 0, report.get("problems")


@pytest.mark.e2e
def test_example_prompts_are_exactly_what_the_policy_sees(capsys, tmp_path):
    _, report, text = _check(capsys, tmp_path, REPO / "recipes" / "real" / "star_gsm8k_qwen2.5_0.5b.yaml", "--smoke")
    first = report["examples"][0]
    assert first.startswith("<|im_start|>user\n") and first.endswith("\\boxed{}.<|im_end|>\n<|im_start|>assistant\n")
    assert first in text
    plan = report["plan"][1]
    assert plan["prompts"] == 16 and plan["samples"] == 16 * 8 and plan["train_rows"] == 10 * 16


def _problems(capsys, tmp_path, *args) -> list[str]:
    code, report, _ = _check(capsys, tmp_path, *args)
    assert code == 2
    return report["problems"]


@pytest.mark.e2e
def test_missing_model_folder(capsys, tmp_path):
    problems = _problems(
        capsys,
        tmp_path,
        REPO / "recipes" / "real" / "star_gsm8k_qwen2.5_0.5b.yaml",
        "--smoke",
        "--model.path",
        tmp_path / "no-such-model",
    )
    assert any("does not exist" in p and "model.path" in p for p in problems)


@pytest.mark.unit
def test_hub_id_not_cached_offline(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    problems = _problems(capsys, tmp_path, TINY_RECIPE, "--model.path", "nobody/no-such-model")
    assert any("not in the hub cache and HF_HUB_OFFLINE is set" in p for p in problems)


@pytest.mark.e2e
def test_no_chat_template(capsys, tmp_path, corpus):
    from selfimprove.smoke.tiny_models import build_bpe_tokenizer, build_tiny_model

    plain = build_tiny_model("qwen2", build_bpe_tokenizer(corpus[:200], 512, chat=False), tmp_path / "base")
    problems = _problems(
        capsys, tmp_path, REPO / "recipes" / "real" / "star_gsm8k_qwen2.5_0.5b.yaml", "--smoke", "--model.path", plain
    )
    assert any("generate.chat_template is true but the tokenizer has no chat template" in p for p in problems)


@pytest.mark.unit
def test_bad_trainer_args(capsys, tmp_path):
    code = main(["check", str(TINY_RECIPE), "--train.trainer_args", "{bf16: false, lerning_rate: 1.0, max_steps: 3}"])
    err = capsys.readouterr().err
    assert code == 2
    assert (
        "train.trainer_args.lerning_rate: not a field of trl.SFTConfig" in err
        and "Did you mean 'learning_rate'?" in err
    )
    assert "train.trainer_args.max_steps: set by train.max_steps" in err


@pytest.mark.unit
def test_unreachable_server(capsys, tmp_path):
    problems = _problems(
        capsys,
        tmp_path,
        TINY_RECIPE,
        "--judge.judges",
        "[llm, format]",
        "--filter.min_scores",
        "{}",
        "--judge.llm.backend",
        "openai",
        "--judge.llm.model",
        "judge",
        "--judge.llm.openai.base_url",
        "http://127.0.0.1:9/v1",
    )
    assert any("GET http://127.0.0.1:9/v1/models failed" in p and "Start the server" in p for p in problems)


@pytest.mark.e2e
def test_server_that_serves_another_model(capsys, tmp_path, tiny_policy):
    from selfimprove.smoke.server import LoopbackServer

    with LoopbackServer(tiny_policy, name="other") as server:
        problems = _problems(
            capsys,
            tmp_path,
            TINY_RECIPE,
            "--judge.judges",
            "[llm, format]",
            "--filter.min_scores",
            "{}",
            "--judge.llm.backend",
            "openai",
            "--judge.llm.model",
            "judge",
            "--judge.llm.openai.base_url",
            server.url,
        )
    assert any("serves ['other'], not 'judge'" in p for p in problems)


@pytest.mark.e2e  # starts a process
def test_vllm_absent(capsys, tmp_path):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    problems = _problems(
        capsys, tmp_path, TINY_RECIPE, "--generate.backend", "vllm", "--generate.vllm.python", sys.executable
    )
    assert any("vLLM does not import" in p for p in problems)


@pytest.mark.unit
def test_prompt_longer_than_the_model(capsys, tmp_path):
    problems = _problems(capsys, tmp_path, TINY_RECIPE, "--model.bootstrap.max_position_embeddings", 8)
    assert any(
        "of the model's 8 positions for an answer" in p and "raise model.bootstrap.max_position_embeddings" in p
        for p in problems
    )


@pytest.mark.e2e
def test_generic_from_scratch_defaults_are_ready(capsys, tmp_path):
    """Only the data files set: task.generic.max_new_tokens (256) plus a prompt exceeds the bootstrap model's 256
    positions, so generation stops at the context, which check states with the field to change."""
    rows = [
        {"prompt": f"Ann has {a} apples and buys {b} more. How many now?", "answer": str(a + b)}
        for a in range(9)
        for b in range(9)
    ]
    files = {
        "prompts": write_jsonl(tmp_path / "p.jsonl", [{"prompt": r["prompt"]} for r in rows[:50]]),
        "seed_data": write_jsonl(
            tmp_path / "s.jsonl", [{"prompt": r["prompt"], "completion": r["answer"]} for r in rows[50:70]]
        ),
        "eval_id": write_jsonl(tmp_path / "e.jsonl", rows[70:]),
    }
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(f"task: {{name: generic, generic: {json.dumps(files)}}}\n")
    code, report, _ = _check(capsys, tmp_path, recipe, "--output_dir", tmp_path / "run")
    assert code == 0, report["problems"]
    longest = 1 + max(len(r["prompt"]) for r in rows)  # characters and BOS
    fact = next(f for f in report["facts"] if f.startswith("generation:"))
    assert "task.generic.max_new_tokens allows 256" in fact and f"generation stops at {256 - longest}" in fact
    assert f"to at least {longest + 256}" in fact and "the seed answers need at most 3" in fact


@pytest.mark.unit
def test_generation_stops_at_the_context():
    from selfimprove.backends.hf import within_context

    kwargs = {"max_new_tokens": 256, "do_sample": True}
    assert within_context(kwargs, 67, 256) == {"max_new_tokens": 189, "do_sample": True}
    assert within_context(kwargs, 10, 4096) is kwargs and within_context(kwargs, 300, None) is kwargs
    assert within_context(kwargs, 256, 256)["max_new_tokens"] == 1
