"""A reward model the run trains itself, once, after round 0 (from round 0's policy unless a path is named):
TRL's ``RewardTrainer`` (Bradley-Terry loss) on pairs the task builds without extra labels, each seed answer
(chosen) against a wrong answer of the same shape (rejected, ``task.corrupt``). The pairs are tokenised exactly as
the reward judge tokenises what it scores (reward_model._texts), so training and scoring see the same sequences.
Written atomically to RUN/reward_model/: model/ (a plain ``save_pretrained`` AutoModelForSequenceClassification
folder), heldout/ (the held-out pairs) and meta.json with the pairwise accuracy on them. With train.launcher
``accelerate`` it runs as its own job, like the policy's training:
``accelerate launch -m selfimprove.stages.judge.train_reward RUN_DIR``."""

from __future__ import annotations

import argparse
import logging
import shutil
from types import SimpleNamespace

from selfimprove.core import seeding
from selfimprove.core.atomic import is_done
from selfimprove.core.config import RewardModelConfig
from selfimprove.core.dist import leave, watch_crashes
from selfimprove.core.logs import setup_logging
from selfimprove.core.rows import load_rows, save_rows
from selfimprove.core.rundir import RunContext
from selfimprove.core.runs import open_run
from selfimprove.core.typed_yaml import ConfigError
from selfimprove.stages.judge.reward_model import _texts, reward_model

logger = logging.getLogger(__name__)


def preference_pairs(task, seed_rows: list[dict], n: int, rng) -> list[dict]:
    """Up to n (prompt, chosen, rejected) pairs: a seed answer against a corrupted copy of it."""
    if not task.corrupts:
        raise ConfigError(
            [
                f"judge.reward_model.train: task {task.name!r} cannot build a wrong answer. "
                "Name a trained reward model in judge.reward_model.path instead."
            ]
        )
    pick = rng.permutation(len(seed_rows))[:n]
    return [
        {
            "prompt": seed_rows[i]["prompt"],
            "chosen": seed_rows[i]["completion"],
            "rejected": task.corrupt(rng, seed_rows[i]["completion"]),
        }
        for i in pick
    ]


def _ids(tok, pairs: list[dict], side: str, max_length: int) -> list[list[int]]:
    texts = _texts(tok, [{"prompt": p["prompt"], "completion": p[side]} for p in pairs])
    return tok(texts, truncation=True, max_length=max_length)["input_ids"]


def pairwise_accuracy(model_dir: str, pairs: list[dict], cfg: RewardModelConfig) -> float:
    """Share of pairs whose chosen answer the reward judge scores above the rejected one."""
    env = SimpleNamespace(
        cfg=SimpleNamespace(reward_model=SimpleNamespace(**{**vars(cfg), "path": model_dir})), cache={}
    )
    rows = [{"prompt": p["prompt"], "completion": p[side]} for p in pairs for side in ("chosen", "rejected")]
    s = reward_model(env, rows)[0]
    return sum(s[2 * i] > s[2 * i + 1] for i in range(len(pairs))) / len(pairs) if pairs else 0.0


def per_device_batch(pairs_per_step: int, world_size: int) -> int:
    """train_batch_size is pairs per optimizer step for any number of processes, so the schedule, and the pairs
    each step sees, do not depend on how the job was launched."""
    if pairs_per_step % world_size:
        raise ConfigError(
            [
                f"judge.reward_model.train_batch_size={pairs_per_step} is not a multiple of the {world_size} "
                "processes of train.accelerate_config. Change one of them."
            ]
        )
    return pairs_per_step // world_size


def train_reward_model(ctx: RunContext) -> None:
    import torch
    from accelerate import PartialState
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from trl import RewardConfig, RewardTrainer

    gpu = torch.cuda.is_available()
    state = PartialState(cpu=not gpu)  # under a launcher: joins the process group before any stage bookkeeping
    cfg, r = ctx.recipe.judge.reward_model, ctx.recipe
    per_device = per_device_batch(cfg.train_batch_size, state.num_processes)
    start = cfg.path or ctx.checkpoint(0)  # by default round 0's policy: a backbone that already reads the task
    pairs = preference_pairs(
        ctx.task, load_rows(ctx.run_dir / "seed_data" / "data"), cfg.train_pairs, seeding.rng(r.seed, "reward_pairs")
    )
    n_held = max(1, round(cfg.heldout_share * len(pairs)))
    held, train = pairs[:n_held], pairs[n_held:]
    with ctx.writing(None, "reward_model", {"start": ctx.relative(start), "pairs": len(train), "heldout": n_held}) as (
        out,
        meta,
    ):
        tok = AutoTokenizer.from_pretrained(start)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        # The score head is new (randomly initialised): seeded, so a redone or resumed run trains the same model.
        set_seed(seeding.int_seed(r.seed, "reward_pairs", 2))
        model = AutoModelForSequenceClassification.from_pretrained(start, num_labels=1, dtype=getattr(torch, cfg.dtype))
        model.config.pad_token_id = tok.pad_token_id
        data = Dataset.from_dict(
            {
                "chosen_ids": _ids(tok, train, "chosen", cfg.max_length),
                "rejected_ids": _ids(tok, train, "rejected", cfg.max_length),
            }
        )
        args = RewardConfig(
            output_dir=str(out / "trainer"),
            max_steps=cfg.train_steps,
            per_device_train_batch_size=per_device,
            learning_rate=cfg.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=0.05,
            logging_steps=max(1, cfg.train_steps // 30),
            save_strategy="no",
            report_to=[],
            use_cpu=not gpu,
            bf16=gpu and cfg.dtype == "bfloat16",
            seed=seeding.int_seed(r.seed, "reward_pairs", 1),
            data_seed=seeding.int_seed(r.seed, "reward_pairs", 1),
            max_length=cfg.max_length,
            disable_tqdm=True,
        )
        trainer = RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
        result = trainer.train()
        trainer.save_model(str(out / "model"))
        tok.save_pretrained(out / "model")
        shutil.rmtree(out / "trainer", ignore_errors=True)
        save_rows(held, out / "heldout")  # the pairs the accuracy is measured on, for anyone to recheck
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        del trainer, model
        state.wait_for_everyone()
        # Only the main process wrote the model (into the stage's partial folder); every rank scores its share of
        # the pairs from there, as the judge stage would.
        saved = str(ctx.run_dir / "reward_model.partial" / "model")
        meta.update(
            train_runtime_s=result.metrics["train_runtime"],  # its model-bound compute (selfimprove.core.timing)
            train_loss=float(result.training_loss),
            losses=losses,
            first_loss=losses[0] if losses else None,
            heldout_pairwise_accuracy=pairwise_accuracy(saved, held, cfg),
            train_pairwise_accuracy=pairwise_accuracy(saved, train[:n_held], cfg),
        )


def main(argv: list[str] | None = None) -> None:
    """Entry for ``accelerate launch -m selfimprove.stages.judge.train_reward RUN_DIR``: reads the run's recipe."""
    watch_crashes()
    parser = argparse.ArgumentParser(
        prog="python -m selfimprove.stages.judge.train_reward", description="Train the run's reward model."
    )
    parser.add_argument("run_dir", help="An existing run directory whose round 0 is trained.")
    parser.add_argument(
        "--force", action="store_true", help="Redo it even if it is done (the finished one stays until the new one is)."
    )
    args = parser.parse_args(argv)
    setup_logging()  # the level of the run that launched this job
    ctx = open_run(args.run_dir, trust=True)  # runs nothing the recipe names but TRL itself
    if is_done(ctx.run_dir / "reward_model") and not args.force:
        logger.info("the reward model is already trained")
        return
    train_reward_model(ctx)
    leave()


if __name__ == "__main__":
    main()
