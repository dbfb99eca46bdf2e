"""Stage 5, train: TRL SFTTrainer on prompt-completion data with completion-only loss, DPOTrainer on the filter's
pairs, or GRPOTrainer online on the round's prompts (selfimprove.stages.train.grpo).

The round's training rows are decided here, before TRL sees them: exactly ``steps x global batch`` rows drawn from
the seed data, earlier rounds' accepted data and the newest round's data (``train.newest_share``), tokenised in one
batched call. TRL then skips its own row-by-row preprocessing (it sees ``input_ids``) and runs one epoch. A GRPO
round's rows are the completions it sampled, saved as ``rollouts`` beside the model.

A stage killed part-way is redone from its clean state (round_k/train.partial is removed first); each round trains
from fixed seeds, so the redone round is the one an uninterrupted run trains (tests/test_grpo.py, test_faults.py).

Run alone (e.g. under ``accelerate launch``): ``python -m selfimprove.stages.train RUN_DIR --round K``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from selfimprove.core import seeding
from selfimprove.core.atomic import clean_partial, finish_stage, is_done
from selfimprove.core.config import LoraConfig, Recipe, TrainConfig
from selfimprove.core.dist import leave, watch_crashes
from selfimprove.core.errors import DataError
from selfimprove.core.judge_prompts import eft_rows, judge_format
from selfimprove.core.logs import setup_logging
from selfimprove.core.model import load_policy, load_tokenizer
from selfimprove.core.prompts import PromptFormat, encode_completions
from selfimprove.core.rows import load_rows, save_rows
from selfimprove.core.rundir import RunContext, accepted_rows
from selfimprove.core.runs import open_run
from selfimprove.core.trainer_args import build_args
from selfimprove.core.typed_yaml import ConfigError
from selfimprove.stages.train import grpo

logger = logging.getLogger(__name__)


def _draw(pool: list[dict], m: int, rng: np.random.Generator) -> list[dict]:
    """m rows cycling through shuffled passes over ``pool``: every row is used as evenly as possible."""
    out: list[dict] = []
    while pool and len(out) < m:
        out += [pool[i] for i in rng.permutation(len(pool))[: m - len(out)]]
    return out


def build_mixture(
    seed_rows: list[dict], older: list[dict], newest: list[dict], cfg: TrainConfig, n_rows: int, rng
) -> list[dict]:
    """The cross-round data policy: which pools feed this round, and the newest round's share of the rows."""
    base = (seed_rows if cfg.seed_data == "keep" else []) + (older if cfg.history == "accumulate" else [])
    if not cfg.use_generated:
        base, newest = seed_rows, []
    if not base and not newest:
        raise DataError(
            "train: no training data this round (train.seed_data is 'drop' and no sample has been "
            "accepted yet). Set train.seed_data: keep, or loosen the filter so some samples pass."
        )
    n_new = n_rows if not base else (round(cfg.newest_share * n_rows) if newest else 0)
    rows = _draw(newest, n_new, rng) + _draw(base, n_rows - n_new, rng)
    return [rows[i] for i in rng.permutation(len(rows))]


def tokenize_rows(rows: list[dict], tokenizer, fmt=None, judge_fmt=None) -> dict:
    """Batched tokenisation to TRL's processed format: input_ids + completion_mask (prompt 0, completion+EOS 1). The
    prompt is encoded by ``fmt`` (selfimprove.core.prompts), exactly as generation encoded it; judging rows (``eft``)
    by ``judge_fmt``, exactly as the judge stage encodes its prompts."""
    p: list = [None] * len(rows)
    for f, eft in ((fmt, False), (judge_fmt, True)):
        idx = [i for i, r in enumerate(rows) if bool(r.get("eft")) == eft]
        if idx:
            for i, ids in zip(idx, (f or PromptFormat()).encode(tokenizer, [rows[i]["prompt"] for i in idx])):
                p[i] = ids
    c = encode_completions(tokenizer, [r["completion"] for r in rows])
    return {
        "input_ids": [a + b for a, b in zip(p, c)],
        "completion_mask": [[0] * len(a) + [1] * len(b) for a, b in zip(p, c)],
    }


def trl_ready(tokenized: dict, args) -> dict:
    """With no truncation or packing asked for, all TRL's dataset preparation would do to tokenised rows is build
    their labels, in a Dataset.map pass over every row: build them here (-100 outside the completion) and let TRL
    skip it. The same tokens carry the loss either way (tests/test_stages.py)."""
    if args.max_length is not None or args.packing:
        return tokenized
    args.dataset_kwargs = {**(args.dataset_kwargs or {}), "skip_prepare_dataset": True}
    ids, masks = tokenized["input_ids"], tokenized["completion_mask"]
    labels = [[t if m else -100 for t, m in zip(row, mask)] for row, mask in zip(ids, masks)]
    return {"input_ids": ids, "labels": labels}


def grad_accumulation(cfg: TrainConfig, world_size: int) -> int:
    """Micro-steps per optimizer step. With global_batch_size set, the effective batch (and so the schedule and the
    rows each step sees) is the same for any number of processes: 64 = 32 x 2 accumulation x 1 process
    = 32 x 1 x 2 processes = 8 x 1 x 8 processes."""
    if not cfg.global_batch_size:
        return cfg.gradient_accumulation_steps
    per_step = cfg.per_device_train_batch_size * world_size
    if cfg.global_batch_size % per_step:
        raise ConfigError(
            [
                f"train.global_batch_size={cfg.global_batch_size} is not a multiple of "
                f"per_device_train_batch_size ({cfg.per_device_train_batch_size}) x {world_size} processes. "
                "Change one of them."
            ]
        )
    return cfg.global_batch_size // per_step


def _peft_config(cfg: LoraConfig):
    if not cfg.enabled:
        return None
    from peft import LoraConfig

    targets = "all-linear" if cfg.target_modules == ["all-linear"] else cfg.target_modules
    return LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, task_type="CAUSAL_LM"
    )


def merge_adapter(base: str, adapter: Path, out: Path, dtype: str) -> None:
    """Fold LoRA adapters into the round's starting weights, so every checkpoint is a plain save_pretrained folder
    that generation (HF or vLLM) loads as-is."""
    from peft import PeftModel

    merged = PeftModel.from_pretrained(load_policy(base, dtype), str(adapter)).merge_and_unload()
    merged.save_pretrained(out)
    shutil.rmtree(adapter)


def _sft_config(r: Recipe, k: int, out: Path, steps: int, accumulation: int, parameters: int):
    from trl import SFTConfig

    return SFTConfig(**build_args(r, k, str(out / "trainer"), steps, accumulation, "sft", parameters))


def training_rows(ctx: RunContext, k: int, n_rows: int) -> list[dict]:
    seed_rows = load_rows(ctx.run_dir / "seed_data" / "data")
    if k == 0:
        llm = ctx.recipe.judge.llm
        n_eft = round(llm.eft_share * n_rows)
        rows = _draw(seed_rows, n_rows - n_eft, seeding.rng(ctx.recipe.seed, "train_mix", 0))
        if not n_eft:
            return rows

        rng = seeding.rng(ctx.recipe.seed, "eft_data")
        rows += eft_rows(ctx.task, seed_rows, llm, n_eft, rng)
        return [rows[i] for i in rng.permutation(len(rows))]
    older = accepted_rows(ctx, k)
    newest = [row for row in load_rows(ctx.stage(k, "select") / "data") if row["selected"]]
    rng = seeding.rng(ctx.recipe.seed, "train_mix", k)
    proposals = proposal_rows(ctx, k)
    n_prop = round(ctx.recipe.propose.train_share * n_rows) if proposals else 0
    rows = build_mixture(seed_rows, older, newest, ctx.recipe.train, n_rows - n_prop, rng)
    if not n_prop:
        return rows
    rows += _draw(proposals, n_prop, rng)
    return [rows[i] for i in rng.permutation(len(rows))]


def proposal_rows(ctx: RunContext, k: int) -> list[dict]:
    """propose.mode 'task_native': every kept proposal of rounds 1..k (not rolled back) as a training row, request ->
    problem, so the proposer keeps writing the problems that passed its filters."""
    if ctx.recipe.propose.mode != "task_native" or not ctx.recipe.propose.runs:
        return []
    rows = []
    for j in range(1, k + 1):
        folder = ctx.stage(j, "propose")
        if is_done(folder) and not ctx.rolled_back(j):
            rows += [
                {
                    "prompt_id": f"propose:{p['prompt_id']}",
                    "prompt": p["request"],
                    "completion": p["prompt"],
                    "round": j,
                }
                for p in load_rows(folder / "prompts")
            ]
    return rows


def training_pairs(ctx: RunContext, k: int, n_rows: int) -> list[dict]:
    """DPO rows: (prompt, chosen, rejected) pairs the filter built, the newest round's and, with history
    'accumulate', earlier rounds' too, mixed by newest_share like SFT rows."""

    def pairs(j):
        path = ctx.stage(j, "filter") / "pairs"
        return load_rows(path) if path.exists() else []

    newest = pairs(k)
    older = [p for j in range(1, k) for p in pairs(j)] if ctx.recipe.train.history == "accumulate" else []
    if not newest and not older:
        raise DataError(
            f"train.method 'dpo': round {k} has no (chosen, rejected) pairs. Check filter.pairs and the "
            "judges: a pair needs two samples of one prompt with different scores."
        )
    return build_mixture([], older, newest, ctx.recipe.train, n_rows, seeding.rng(ctx.recipe.seed, "train_mix", k))


def _dpo_trainer(ctx: RunContext, k, rows, model, tok, out: Path, steps: int, accumulation: int, ref_path: str):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    r, fmt = ctx.recipe, ctx.prompt_format
    args = DPOConfig(**build_args(r, k, str(out / "trainer"), steps, accumulation, "dpo", model.num_parameters()))
    if fmt.uses_template(tok):  # conversational: TRL applies the chat template, as generation did
        data = [
            {
                "prompt": fmt.messages(x["prompt"]),
                "chosen": [{"role": "assistant", "content": x["chosen"]}],
                "rejected": [{"role": "assistant", "content": x["rejected"]}],
            }
            for x in rows
        ]
    else:
        data = [{"prompt": fmt.plain(x["prompt"]), "chosen": x["chosen"], "rejected": x["rejected"]} for x in rows]
    ref = (
        None if r.train.lora.enabled else load_policy(ref_path, r.model.dtype)
    )  # with LoRA, TRL uses the adapter-free base
    return DPOTrainer(
        model=model,
        ref_model=ref,
        args=args,
        train_dataset=Dataset.from_list(data),
        processing_class=tok,
        peft_config=_peft_config(r.train.lora),
    )


def quiet_progress(trainer) -> None:
    """Keep the Trainer's progress bar (on a terminal) but not its printed dicts of stringified numbers (the round's
    loss is in the round's summary line and metrics.jsonl); --log-level debug keeps them."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    if logging.getLogger("selfimprove").isEnabledFor(logging.DEBUG):
        return

    class BarOnly(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    for callback in (ProgressCallback, PrinterCallback):
        if trainer.pop_callback(callback) is not None and callback is ProgressCallback and sys.stderr.isatty():
            trainer.add_callback(BarOnly)  # a bar on a terminal; none in a log, where it is a line per update


class TokenCount:
    """Wraps a trainer's data collator to count what the optimizer steps saw: the real tokens and all positions
    (real + padding) of every ``*input_ids`` tensor, with its ``*attention_mask`` (padding-free batches have none:
    every position is real). Each process counts its own batches; ``totals`` sums them over processes."""

    def __init__(self, collate):
        self.collate, self.real, self.positions = collate, 0, 0

    def __call__(self, features):
        batch = self.collate(features)
        for key, ids in batch.items():
            if key.endswith("input_ids"):
                mask = batch.get(key.replace("input_ids", "attention_mask"))
                self.positions += ids.numel()
                self.real += int(mask.sum()) if mask is not None else ids.numel()
        return batch

    def totals(self, accelerator) -> tuple[int, int]:
        import torch

        both = accelerator.reduce(torch.tensor([self.real, self.positions], device=accelerator.device), "sum")
        return int(both[0]), int(both[1])


def _trainer(ctx: RunContext, k: int, method: str, rows, model, tok, out: Path, steps: int, accumulation: int):
    """Round k's TRL trainer for its method, training into ``out``."""
    from datasets import Dataset
    from trl import SFTTrainer

    r = ctx.recipe
    if method == "dpo":
        ref = ctx.checkpoint(-1) if r.train.dpo.reference == "base" else ctx.checkpoint(k - 1)
        return _dpo_trainer(ctx, k, rows, model, tok, out, steps, accumulation, ref)
    if method == "grpo":
        return grpo.grpo_trainer(ctx, k, model, tok, out, steps, accumulation, _peft_config(r.train.lora))
    tokenized = tokenize_rows(rows, tok, ctx.prompt_format, judge_format(r.judge.llm))
    args = _sft_config(r, k, out, steps, accumulation, model.num_parameters())
    dataset = Dataset.from_dict(trl_ready(tokenized, args))
    return SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tok, peft_config=_peft_config(r.train.lora)
    )


def run_train(ctx: RunContext, k: int) -> None:
    """Train round k's policy into round_k/train/model (a save_pretrained folder)."""
    import torch
    from accelerate import PartialState

    # cpu=True on a GPU-less machine makes this the same MULTI_CPU/gloo state the Trainer's Accelerator will use;
    # created without it, it first reports one process, and the batch arithmetic below would be wrong.
    r, state, start = ctx.recipe, PartialState(cpu=not torch.cuda.is_available()), time.perf_counter()
    final = ctx.stage(k, "train")
    partial = final.with_name("train.partial")
    inputs = ctx.inputs(k, "train")
    steps = r.train.bootstrap_steps if k == 0 else r.train.max_steps
    accumulation = grad_accumulation(r.train, state.num_processes)
    global_batch = r.train.per_device_train_batch_size * accumulation * state.num_processes
    init = ctx.checkpoint(-1) if (k == 0 or r.train.init == "base") else ctx.checkpoint(k - 1)
    if state.is_main_process:
        clean_partial(final)  # a finished final (a forced redo) stays until this one is finished
    state.wait_for_everyone()
    method = r.train.method if k > 0 else "sft"  # round 0 is always the supervised bootstrap
    rows = (
        [] if method == "grpo" else (training_pairs if method == "dpo" else training_rows)(ctx, k, steps * global_batch)
    )
    tok, model = load_tokenizer(init), load_policy(init, r.model.dtype)
    losses, result, extra = [], None, {}
    real = positions = 0
    if steps:
        trainer = _trainer(ctx, k, method, rows, model, tok, partial, steps, accumulation)
        quiet_progress(trainer)
        if method != "grpo":  # GRPO's batches are prompts; it counts the tokens it generates and trains on itself
            trainer.data_collator = counted = TokenCount(trainer.data_collator)
        result = trainer.train()
        real, positions = grpo.trained_tokens(trainer) if method == "grpo" else counted.totals(trainer.accelerator)
        # Gathers ZeRO-3 / FSDP shards into one folder (zero3_save_16bit_model / FULL_STATE_DICT); LoRA saves adapters.
        trainer.save_model(str(partial / ("adapter" if r.train.lora.enabled else "model")))
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        if method == "grpo":
            rows = trainer.rollouts
            extra = {"step_metrics": grpo.summary(trainer.state.log_history), **grpo.rollout_counts(rows)}
        del trainer, model
        if r.train.lora.enabled and state.is_main_process:
            merge_adapter(init, partial / "adapter", partial / "model", r.model.dtype)
    elif state.is_main_process:  # zero steps: the round's policy is its starting point, exported as a folder
        model.save_pretrained(partial / "model")
    if state.is_main_process:
        tok.save_pretrained(partial / "model")
        if method == "grpo":
            save_rows(rows, partial / "rollouts")
        save_rows([{"prompt_id": x["prompt_id"], "round": x.get("round", 0)} for x in rows], partial / "data")
        shutil.rmtree(partial / "trainer", ignore_errors=True)
        finish_stage(
            partial,
            final,
            {
                "init": ctx.relative(init),
                "recipe": ctx.recipe_hash,
                "method": method,
                "steps": steps,
                "global_batch": global_batch,
                "world_size": state.num_processes,
                "per_device_batch": r.train.per_device_train_batch_size,
                "gradient_accumulation": accumulation,
                "rows": len(rows),
                "rows_by_round": {str(j): sum(1 for x in rows if x.get("round", 0) == j) for j in range(k + 1)},
                "losses": losses,
                "first_loss": losses[0] if losses else None,
                "last_loss": losses[-1] if losses else None,
                "train_runtime_s": result.metrics["train_runtime"] if result else 0.0,
                "trained_tokens": real,  # the compute ledger: real tokens the steps saw, and all their positions
                "trained_positions": positions,
                "wall_s": round(time.perf_counter() - start, 3),
                **extra,
            },
            inputs,
        )
    state.wait_for_everyone()


def main(argv: list[str] | None = None) -> None:
    """Entry for ``accelerate launch -m selfimprove.stages.train RUN_DIR --round K``: reads the run's saved recipe."""
    watch_crashes()

    parser = argparse.ArgumentParser(
        prog="python -m selfimprove.stages.train", description="Run one round's training stage."
    )
    parser.add_argument("run_dir", help="An existing run directory (holds recipe.yaml).")
    parser.add_argument("--round", type=int, required=True, help="Round to train (its select stage must be done).")
    parser.add_argument(
        "--force", action="store_true", help="Redo it even if it is done (the finished one stays until the new one is)."
    )
    args = parser.parse_args(argv)
    setup_logging()  # the level of the run that launched this job
    ctx = open_run(args.run_dir, trust=True)  # training runs nothing the recipe names but TRL itself
    if is_done(ctx.stage(args.round, "train")) and not args.force:
        logger.info("round %d train is already done", args.round)
        return
    run_train(ctx, args.round)
    leave()


if __name__ == "__main__":
    main()
