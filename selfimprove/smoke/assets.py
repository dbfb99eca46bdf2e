"""What ``--smoke`` substitutes for hub downloads, built locally once and cached (``SELFIMPROVE_SMOKE_CACHE``, default
``~/.cache/selfimprove/smoke``): the stand-in datasets (selfimprove.smoke.data), one byte-level BPE tokenizer trained
on their text, and per architecture family three tiny models of the real class (selfimprove.smoke.tiny_models):

- ``<family>-instruct``: the policy stand-in, an instruct model in miniature. Random weights would write noise that
  no verifier accepts and no round could learn from, so it is first fine-tuned for a few hundred TRL steps on chat
  turns of the stand-in data: boxed answers to the GSM8K-shaped problems, and UltraFeedback-shaped answers, good and
  bad ones alike (so a judge has something to tell apart).
- ``<family>-judge``: the judge stand-in, fine-tuned the same way to answer the built-in pointwise and pairwise judge
  templates with "Score: N" / "Winner: X" verdicts taken from the stand-in preference scores.
- ``<family>-reward``: a 1-label sequence classifier (a reward model), random weights.
Each asset is built into a scratch folder and renamed into place, under a file lock, so concurrent runs share it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from selfimprove.core.judge_prompts import load_template, render
from selfimprove.core.model import load_policy, load_tokenizer
from selfimprove.core.prompts import PromptFormat
from selfimprove.core.trainer_args import checkpointing_args
from selfimprove.smoke import data as sd
from selfimprove.smoke.tiny_models import TinySize, build_bpe_tokenizer, build_tiny_model
from selfimprove.stages.train import tokenize_rows

VERSION = "v1"  # bump when an asset's recipe changes, so stale caches are rebuilt
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def cache_dir() -> Path:
    root = os.environ.get("SELFIMPROVE_SMOKE_CACHE") or Path.home() / ".cache" / "selfimprove" / "smoke"
    return Path(root) / VERSION


def _built(path: Path, build) -> Path:
    """``path``, built by ``build(scratch)`` first if it is not there yet; safe against concurrent callers."""
    from filelock import FileLock

    if (path / "DONE").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not (path / "DONE").exists():
            scratch = path.with_name(path.name + ".partial")
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
            build(scratch)
            (scratch / "DONE").write_text("built\n")
            shutil.rmtree(path, ignore_errors=True)
            os.replace(scratch, path)
    return path


def dataset(hub_id: str) -> Path:
    """The local stand-in folder for a hub dataset id (a KeyError for ids without one)."""
    writer = sd.DATASETS[hub_id]
    return _built(cache_dir() / "datasets" / hub_id.replace("/", "__"), writer)


def _rows(hub_id: str, config: str | None, split: str) -> list[dict]:
    from datasets import load_dataset

    return load_dataset(str(dataset(hub_id)), config, split=split).to_list()


def _judge_rows(uf: list[dict]) -> list[dict]:
    """Built-in judge templates answered with the stand-in preference scores: pointwise "Score: N" for both answers,
    and pairwise "Winner: X" in both orders."""
    point, pair = load_template("", "pointwise"), load_template("", "pairwise")
    rows = []
    for r in uf:
        good, bad = r["chosen"][-1]["content"], r["rejected"][-1]["content"]
        for text, score in ((good, r["score_chosen"]), (bad, r["score_rejected"])):
            rows.append(
                {
                    "prompt": render(point, prompt=r["prompt"], completion=text, max_score=10),
                    "completion": f"Score: {int(score)}",
                }
            )
        rows.append(
            {"prompt": render(pair, prompt=r["prompt"], a=good, b=bad, max_score=10), "completion": "Winner: A"}
        )
        rows.append(
            {"prompt": render(pair, prompt=r["prompt"], a=bad, b=good, max_score=10), "completion": "Winner: B"}
        )
    return rows


def _policy_rows(gsm: list[dict], uf: list[dict], rng: np.random.Generator) -> list[dict]:
    rows = [
        {
            "prompt": g["question"] + ("\n" + INSTRUCTION if rng.random() < 0.5 else ""),
            "completion": sd.boxed_solution(g),
        }
        for g in gsm
    ]
    return rows + [
        {"prompt": u["prompt"], "completion": (u["chosen"] if rng.random() < 0.7 else u["rejected"])[-1]["content"]}
        for u in uf
    ]


def tokenizer_folder() -> Path:
    def build(out: Path):
        gsm = _rows("openai/gsm8k", "main", "train")
        uf = _rows("HuggingFaceH4/ultrafeedback_binarized", None, "train_prefs")
        texts = [g["question"] + "\n" + g["answer"] + "\n" + sd.boxed_solution(g) + "\n" + INSTRUCTION for g in gsm]
        texts += [r["prompt"] + "\n" + r["completion"] for r in _judge_rows(uf)]
        build_bpe_tokenizer(texts, vocab_size=2048).save_pretrained(out)

    return _built(cache_dir() / "tokenizer", build)


def _finetune(model_dir: Path, rows: list[dict], steps: int, seed: int) -> None:
    """A few hundred TRL SFT steps on chat turns, completion-only loss, saved back into ``model_dir``."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tok, model = load_tokenizer(str(model_dir)), load_policy(str(model_dir))
    data = Dataset.from_dict(tokenize_rows(rows, tok, PromptFormat(chat=True)))
    args = SFTConfig(
        output_dir=str(model_dir / "trainer"),
        max_steps=steps,
        per_device_train_batch_size=32,
        learning_rate=3e-3,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        logging_steps=steps,
        seed=seed,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        **checkpointing_args("sft", False),
        completion_only_loss=True,
        max_length=None,
        disable_tqdm=True,
    )
    SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok).train()
    shutil.rmtree(model_dir / "trainer", ignore_errors=True)
    model.save_pretrained(model_dir)


def model_folder(family: str, role: str) -> Path:
    """``role``: 'instruct', 'judge' or 'reward', of architecture ``family`` (a transformers model_type)."""

    def build(out: Path):
        tok = load_tokenizer(str(tokenizer_folder()))
        build_tiny_model(family, tok, out, TinySize(), seed=0, classifier=role == "reward")
        if role == "reward":
            return
        uf = _rows("HuggingFaceH4/ultrafeedback_binarized", None, "train_prefs")
        rows = (
            _judge_rows(uf)
            if role == "judge"
            else _policy_rows(_rows("openai/gsm8k", "main", "train"), uf, np.random.default_rng(0))
        )
        _finetune(out, rows, steps=400, seed=0)

    return _built(cache_dir() / "models" / f"{family}-{role}", build)
