"""Where does a CPU training round's time go? Prints ratios measured side by side in one run.

1. Data preparation: selfimprove's batched pre-tokenisation with labels built in the same pass (TRL's preparation
   skipped, selfimprove.stages.train.trl_ready) vs TRL SFTTrainer's own preprocessing of the same prompt-completion
   rows, each up to a trainer ready to train.
2. Step time: a TRL SFTTrainer step (as selfimprove configures it) vs a bare PyTorch forward/backward/AdamW step on
   the same model and batches.
3. Profile: where a TRL step's time goes (cProfile over the same steps): the model's forward, backward, the
   optimizer, collation, TRL's per-step metrics (entropy and token accuracy, gathered across ranks every step),
   callbacks and logging, and the rest. cProfile slows Python-heavy parts more than kernels, so read the shares as
   an upper bound on the Python overhead.
4. Padding: GSM8K-shaped rows (prompts and answers of 100-700 characters, a RoPE character model) trained with
   padded batches and with TRL's padding-free batches (``train.trainer_args: {padding_free: true}``): real tokens
   per second and the share of padding in the padded batches.

    python scripts/bench_train_overhead.py --rows 50000 --steps 200
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50000, help="Prompt-completion rows to prepare.")
    parser.add_argument("--steps", type=int, default=200, help="Training steps to time.")
    parser.add_argument("--batch", type=int, default=64, help="Sequences per step.")
    args = parser.parse_args()

    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from selfimprove.core.config import BootstrapConfig
    from selfimprove.core.model import build_bootstrap_model, build_char_tokenizer
    from selfimprove.stages.train import tokenize_rows, trl_ready
    from selfimprove.tasks.addition import AdditionConfig, AdditionTask

    rows = AdditionTask(AdditionConfig(seed_size=args.rows, seed_max_digits=8, eval_max_digits=9), 0).seed_data()
    tok = build_char_tokenizer("0123456789+=")
    model = build_bootstrap_model(BootstrapConfig(), tok, seed=0)
    out = tempfile.mkdtemp()

    def sft_args(**kw):
        return SFTConfig(
            output_dir=out,
            max_steps=args.steps,
            per_device_train_batch_size=args.batch,
            report_to=[],
            use_cpu=True,
            bf16=False,
            gradient_checkpointing=False,
            completion_only_loss=True,
            save_strategy="no",
            disable_tqdm=True,
            logging_steps=10**6,
            max_length=None,
            **kw,
        )

    t0 = time.perf_counter()  # both sides up to a trainer ready to train, as run_train builds it
    ours_args = sft_args()
    ours = Dataset.from_dict(trl_ready(tokenize_rows(rows, tok), ours_args))
    SFTTrainer(model=model, args=ours_args, train_dataset=ours, processing_class=tok)
    t_ours = time.perf_counter() - t0
    raw = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    t0 = time.perf_counter()
    SFTTrainer(model=model, args=sft_args(), train_dataset=raw, processing_class=tok)
    t_trl = time.perf_counter() - t0
    print(
        f"data prep, {args.rows} rows: selfimprove batched {t_ours:.2f}s | TRL own preprocessing {t_trl:.2f}s | ratio "
        f"{t_trl / t_ours:.1f}x"
    )

    trainer = SFTTrainer(
        model=model, args=ours_args, train_dataset=ours.select(range(args.steps * args.batch)), processing_class=tok
    )
    t0 = time.perf_counter()
    trainer.train()
    t_step_trl = (time.perf_counter() - t0) / args.steps

    collate = trainer.data_collator
    bare = build_bootstrap_model(BootstrapConfig(), tok, seed=0)
    opt = torch.optim.AdamW(bare.parameters(), lr=1e-3)
    batches = [collate([ours[i] for i in range(s * args.batch, (s + 1) * args.batch)]) for s in range(args.steps)]
    t0 = time.perf_counter()
    for b in batches:
        loss = bare(input_ids=b["input_ids"], attention_mask=b.get("attention_mask"), labels=b["labels"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    t_step_bare = (time.perf_counter() - t0) / args.steps
    print(
        f"step time, batch {args.batch}: TRL SFTTrainer {t_step_trl * 1000:.1f}ms | bare PyTorch "
        f"{t_step_bare * 1000:.1f}ms | ratio {t_step_trl / t_step_bare:.2f}x"
    )

    profile_part(trainer, ours.select(range(args.steps * args.batch)), tok, ours_args)
    padding_free_part(tok)


# (label, file fragment, function name): the top-level call of each part of a step, cumulative time
PARTS = (
    ("forward (TRL's fused forward: backbone + LM head)", "trl/trainer/utils.py", "_fused_forward"),
    ("backward", "torch/autograd/__init__.py", "backward"),
    ("optimizer step", "torch/optim/", "step"),
    ("collation", "trl/trainer/sft_trainer.py", "torch_call"),
    ("TRL metrics (gather_for_metrics)", "accelerate/accelerator.py", "gather_for_metrics"),
    ("callbacks and logging", "transformers/trainer_callback.py", "call_event"),
)


def profile_part(trainer, dataset, tok, args) -> None:
    import cProfile
    import pstats

    from trl import SFTTrainer

    from selfimprove.core.config import BootstrapConfig
    from selfimprove.core.model import build_bootstrap_model

    fresh = SFTTrainer(
        model=build_bootstrap_model(BootstrapConfig(), tok, seed=0), args=args, train_dataset=dataset,
        processing_class=tok,
    )  # fmt: skip
    prof = cProfile.Profile()
    prof.enable()
    fresh.train()
    prof.disable()
    stats = pstats.Stats(prof).stats  # {(file, line, name): (calls, ncalls, tottime, cumtime, callers)}
    total = max(v[3] for (f, _, n), v in stats.items() if n == "train" and f.endswith("trainer.py"))
    shares = []
    for label, fragment, name in PARTS:
        cum = max((v[3] for (f, _, n), v in stats.items() if n == name and fragment in f), default=0.0)
        shares.append((label, cum))
    parts = " | ".join(f"{label} {100 * cum / total:.1f}%" for label, cum in shares)
    rest = total - sum(cum for _, cum in shares)
    head = max(
        (v[3] for (f, _, n), v in stats.items() if n == "forward" and "trl/kernels/chunked_logprob" in f), default=0
    )
    parts += (
        f" (of the forward, the chunked LM head that also folds entropy and accuracy in: {100 * head / total:.1f}%)"
    )
    print(
        f"profile of {args.max_steps} TRL steps ({total:.2f}s under cProfile): {parts} | rest {100 * rest / total:.1f}%"
    )


def padding_free_part(tok, steps: int = 20, batch: int = 16) -> None:
    import numpy as np
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from selfimprove.core.config import BootstrapConfig
    from selfimprove.core.model import build_bootstrap_model
    from selfimprove.stages.train import tokenize_rows, trl_ready

    rng = np.random.default_rng(0)
    length = lambda: int(np.clip(rng.lognormal(5.4, 0.5), 100, 700))  # noqa: E731  (~220 characters, long tail)
    text = lambda n: "".join(rng.choice(list("0123456789+="), n))  # noqa: E731
    rows = [{"prompt": text(length()), "completion": text(length())} for _ in range(steps * batch)]
    shape = BootstrapConfig(positional="rope", max_position_embeddings=1536)
    real = sum(len(r["prompt"]) + len(r["completion"]) + 2 for r in rows)  # BOS and EOS
    results = {}
    for padding_free in (False, True):
        args = SFTConfig(
            output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=batch, use_cpu=True,
            report_to=[], save_strategy="no", disable_tqdm=True, logging_steps=10**6, completion_only_loss=True,
            max_length=None, padding_free=padding_free, seed=0, data_seed=0,
        )  # fmt: skip
        data = Dataset.from_dict(trl_ready(tokenize_rows(rows, tok), args))
        trainer = SFTTrainer(
            model=build_bootstrap_model(shape, tok, seed=0), args=args, train_dataset=data, processing_class=tok
        )
        padded = sum(
            len(b["input_ids"]) * max(len(x) for x in b["input_ids"])
            for b in (data[i : i + batch] for i in range(0, len(data), batch))
        )
        t0 = time.perf_counter()
        trainer.train()
        results[padding_free] = (real / (time.perf_counter() - t0), 1 - real / padded)
    (pad_tps, share), (flat_tps, _) = results[False], results[True]
    print(
        f"padding, {len(rows)} GSM8K-shaped rows: padded {pad_tps:,.0f} tok/s ({100 * share:.0f}% of the batch "
        f"is padding) | padding-free {flat_tps:,.0f} tok/s (none) | ratio {flat_tps / pad_tps:.2f}x"
    )


if __name__ == "__main__":
    main()
