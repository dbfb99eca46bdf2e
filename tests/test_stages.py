"""Each stage's core function against hand-computed expectations, with a tiny model built in a fixture."""

import pytest

from selfimprove.backends import Sampling
from selfimprove.backends.hf import hf_generate
from selfimprove.core.config import FilterConfig, JudgeConfig, SelectConfig, TrainConfig
from selfimprove.core.errors import DataError
from selfimprove.stages.filter import filter_rows
from selfimprove.stages.judge import JudgeEnv, judge_rows
from selfimprove.stages.select import select_rows
from selfimprove.stages.train import build_mixture, tokenize_rows
from selfimprove.tasks.addition import AdditionConfig, AdditionTask

pytestmark = pytest.mark.unit

TASK = AdditionTask(AdditionConfig(), 0)


def _samples(prompt_id, prompt, completions, reference=""):
    return [
        {
            "prompt_id": prompt_id,
            "prompt": prompt,
            "completion": c,
            "finished": True,
            "reference": reference,
            "sample_idx": i,
            "num_tokens": len(c),
            "round": 1,
        }
        for i, c in enumerate(completions)
    ]


def _judge(rows, judges, weights=None, **kw):
    return judge_rows(JudgeEnv(TASK, JudgeConfig(judges=judges, weights=weights or {}, **kw)), rows)[0]


def test_majority_and_format_judges_by_hand():
    rows = _samples("p0", "75+8=", ["560", "560", "561", "56", "xx"], reference="560")
    out = _judge(rows, ["format", "majority", "verifier"], {"verifier": 2.0})
    assert [r["score_majority"] for r in out] == [0.4, 0.4, 0.2, 0.2, 0.0]  # "56" is one valid vote; "xx" has no answer
    assert [r["score_format"] for r in out] == [1, 1, 1, 0, 0]
    assert [r["score_verifier"] for r in out] == [1, 1, 0, 0, 0]
    assert out[0]["score"] == pytest.approx((1 + 0.4 + 2 * 1) / 4)
    assert [r["oracle_correct"] for r in out] == [1, 1, 0, 0, 0]
    # vote: the weighted share of judges at or above their threshold (0.5 unless named)
    voted = _judge(
        rows, ["format", "majority", "verifier"], {"verifier": 2.0}, combine="vote", vote_thresholds={"majority": 0.3}
    )
    assert [r["score"] for r in voted] == [1.0, 1.0, 0.25, 0.0, 0.0]


def test_consistency_judge_compares_equivalent_prompts_by_hand():
    ab = _samples("p0", "75+8=", ["560", "560", "560", "561"])  # 57 + 8, the model sure of "560"
    ba = _samples("p1", "8+75=", ["561", "561", "560", "xx"])  # 8 + 57: mostly "561", one "560", one no answer
    alone = _samples("p2", "1+1=", ["20", "20", "30"])  # no equivalent prompt: its own vote
    rows = [{**r, "group_id": "g0"} for r in ab + ba] + alone
    out = _judge(rows, ["majority", "consistency"])
    # p0's "560" is given by 1 of p1's 4 samples, its "561" by 2; p1's "561" by 1 of p0's 4, its "560" by 3
    assert [r["score_consistency"] for r in out] == [
        0.25,
        0.25,
        0.25,
        0.5,
        0.25,
        0.25,
        0.75,
        0.0,
        pytest.approx(2 / 3),
        pytest.approx(2 / 3),
        pytest.approx(1 / 3),
    ]
    assert out[0]["score_majority"] == 0.75  # the vote alone would keep p0's "560" at a 0.7 threshold


def test_verifier_refuses_unlabelled_prompts():
    with pytest.raises(DataError, match="needs a reference answer"):
        _judge(_samples("p0", "75+8=", ["560"]), ["verifier"])


def test_filter_thresholds_best_of_n_and_off_switch():
    rows = _judge(_samples("p0", "75+8=", ["560", "560", "561", "56", "560"]), ["format", "majority"])
    kept = filter_rows(rows, FilterConfig(min_scores={"format": 1.0, "majority": 0.6}))
    assert [r["kept"] for r in kept] == [True, True, False, False, True]
    assert (
        kept[2]["filter_reason"] == "score_majority<0.6"
        and kept[3]["filter_reason"] == "score_format<1.0,score_majority<0.6"
    )
    best = filter_rows(rows, FilterConfig(min_scores={"format": 1.0}, best_of_n=2))
    assert [r["kept"] for r in best] == [True, True, False, False, False]  # ties broken by sample order
    assert best[4]["filter_reason"] == "not in best_of_2"
    off = filter_rows(rows, FilterConfig(enabled=False))
    assert all(r["kept"] for r in off) and off[0]["filter_reason"] == "filter disabled"


def test_select_dedups_against_history_caps_and_budgets():
    rows = [
        {"prompt_id": p, "prompt": p, "completion": c, "score": s}
        for p, c, s in [
            ("a", "1", 0.9),
            ("a", "1", 0.9),
            ("a", "2", 0.8),
            ("b", "3", 0.5),
            ("c", "4", 0.7),
            ("d", "5", 1.0),
        ]
    ]
    out = select_rows(rows, SelectConfig(dedup="exact", per_prompt_cap=1), prior=[{"prompt": "c", "completion": "4"}])
    assert [r["select_reason"] for r in out] == [
        "selected",
        "duplicate",
        "per_prompt_cap",
        "selected",
        "duplicate",
        "selected",
    ]
    out = select_rows(rows, SelectConfig(dedup="exact", per_prompt_cap=0, budget=2))
    assert [r["prompt_id"] + r["completion"] for r in out if r["selected"]] == ["a1", "d5"]
    assert sum(r["selected"] for r in out) == 2 and out[2]["select_reason"] == "over_budget"


def test_mixture_policy_shares_and_control():
    import numpy as np

    seed = [{"prompt_id": f"s{i}", "round": 0} for i in range(10)]
    older = [{"prompt_id": f"o{i}", "round": 1} for i in range(10)]
    newest = [{"prompt_id": f"n{i}", "round": 2} for i in range(4)]
    rng = np.random.default_rng(0)
    rows = build_mixture(seed, older, newest, TrainConfig(newest_share=0.25), 100, rng)
    rounds = [r["round"] for r in rows]
    assert len(rows) == 100 and rounds.count(2) == 25 and rounds.count(0) + rounds.count(1) == 75
    replace = build_mixture(seed, older, newest, TrainConfig(history="replace", newest_share=0.5), 40, rng)
    assert {r["round"] for r in replace} == {0, 2}
    control = build_mixture(seed, older, newest, TrainConfig(use_generated=False), 40, rng)
    assert {r["round"] for r in control} == {0}
    # pools are cycled evenly: 25 draws from 4 newest rows use each 6 or 7 times
    counts = [sum(r["prompt_id"] == f"n{i}" for r in rows) for i in range(4)]
    assert sorted(counts) == [6, 6, 6, 7]


def test_tokenize_rows_masks_only_completion_and_eos(tiny_policy):
    from selfimprove.core.model import load_tokenizer

    tok = load_tokenizer(tiny_policy)
    out = tokenize_rows([{"prompt": "75+8=", "completion": "560"}], tok)
    ids, mask = out["input_ids"][0], out["completion_mask"][0]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and len(ids) == 1 + 5 + 3 + 1
    assert mask == [0] * 6 + [1] * 4
    assert tok.decode(ids[6:9]) == "560"


def test_generate_batched_greedy_matches_one_by_one(tiny_policy):
    from selfimprove.core.model import load_policy, load_tokenizer

    model, tok = load_policy(tiny_policy), load_tokenizer(tiny_policy)
    prompts = ["1+2=", "12345+6=", "99+1=", "7+7="]
    s = Sampling(max_new_tokens=6)
    batched = hf_generate(model, tok, prompts, s, seed=0, batch_size=4)
    single = [hf_generate(model, tok, [p], s, seed=0, batch_size=1)[0] for p in prompts]
    assert batched == single  # left padding must not change greedy outputs
    assert all(len(x) == 1 and x[0]["num_tokens"] <= 6 for x in batched)


def test_generate_sampling_is_seeded(tiny_policy):
    from selfimprove.core.model import load_policy, load_tokenizer

    model, tok = load_policy(tiny_policy), load_tokenizer(tiny_policy)
    s = Sampling(num_samples=3, temperature=1.0, max_new_tokens=5)
    a = hf_generate(model, tok, ["1+2=", "3+4="], s, seed=7, batch_size=2)
    b = hf_generate(model, tok, ["1+2=", "3+4="], s, seed=7, batch_size=2)
    c = hf_generate(model, tok, ["1+2=", "3+4="], s, seed=8, batch_size=2)
    assert a == b and a != c and all(len(x) == 3 for x in a)


def test_oracle_correct_is_unknown_without_a_reference():
    from selfimprove.tasks import oracle_correct

    assert oracle_correct(TASK, "560", "560") == 1 and oracle_correct(TASK, "561", "560") == 0
    assert oracle_correct(TASK, "560", "") == -1  # probe and judge alike: no reference, no pass@k


def test_round_timing_splits_a_round_into_stages_between_stages_compute_and_overhead():
    from selfimprove.core.timing import round_timing

    metas = {
        "generate": {"wall_s": 10.0, "compute_s": 7.0},
        "train": {"wall_s": 30.0, "compute_s": 0.0, "train_runtime_s": 24.0},  # TRL's training steps
        "monitor": {"wall_s": 2.0, "compute_s": 0.0},
    }
    t = round_timing(metas, 45.0, complete=True, setup_s=3.0)
    assert t["time/generate_s"] == 10.0 and t["time/monitor_s"] == 2.0 and t["time/setup_s"] == 3.0
    assert t["time/compute_s"] == 31.0 and t["time/between_stages_s"] == 3.0  # 45 - (10 + 30 + 2)
    assert t["time/overhead_s"] == 14.0 and t["time/overhead_share"] == round(14 / 45, 4)
    resumed = round_timing(metas, 5.0, complete=False)  # some stages ran in an earlier process: no overhead
    assert resumed["time/resumed"] == 1 and "time/overhead_s" not in resumed and "time/setup_s" not in resumed


def test_labels_built_here_train_exactly_like_trls_own_preparation(tiny_policy, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from selfimprove.core.model import load_policy, load_tokenizer
    from selfimprove.stages.train import trl_ready

    tok = load_tokenizer(tiny_policy)
    rows = [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a, b in [(1, 2), (75, 8), (12, 345), (9, 99)] * 4]
    tokenized = tokenize_rows(rows, tok)
    base = dict(
        max_steps=3, per_device_train_batch_size=4, logging_steps=1, use_cpu=True, report_to=[], save_strategy="no",
        completion_only_loss=True, max_length=None, seed=0, data_seed=0, learning_rate=1e-2, disable_tqdm=True,
    )  # fmt: skip

    def losses(data, args):
        trainer = SFTTrainer(
            model=load_policy(tiny_policy), args=args, train_dataset=Dataset.from_dict(data), processing_class=tok
        )
        trainer.train()
        return [e["loss"] for e in trainer.state.log_history if "loss" in e]

    theirs = losses(tokenized, SFTConfig(output_dir=str(tmp_path / "a"), **base))
    args = SFTConfig(output_dir=str(tmp_path / "b"), **base)
    ready = trl_ready(tokenized, args)
    assert args.dataset_kwargs["skip_prepare_dataset"] and "completion_mask" not in ready
    ids, mask = tokenized["input_ids"][1], tokenized["completion_mask"][1]  # 75+8=: BOS and 5 prompt characters
    assert ready["labels"][1] == [-100] * 6 + ids[6:] and mask == [0] * 6 + [1] * (len(ids) - 6)
    assert losses(ready, args) == theirs and len(theirs) == 3  # the same tokens carry the same loss
    truncating = SFTConfig(output_dir=str(tmp_path / "c"), **{**base, "max_length": 8})
    assert trl_ready(tokenized, truncating) is tokenized  # TRL truncates: its own preparation stays


def test_padding_free_batches_give_the_padded_loss_per_token(tmp_path):
    """train.trainer_args {padding_free: true}: TRL flattens each batch into one row with position ids restarting
    per sequence; on variable-length rows the loss is the padded batches' to float rounding (RoPE, so a wrong
    position would show)."""
    import numpy as np
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from selfimprove.core.config import BootstrapConfig
    from selfimprove.core.model import build_bootstrap_model, build_char_tokenizer
    from selfimprove.stages.train import trl_ready

    tok = build_char_tokenizer("0123456789+=")
    rng = np.random.default_rng(0)
    sizes = 10 ** rng.integers(1, 8, 64)[:, None]  # 1..7-digit operands: rows of very different lengths
    rows = [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a, b in rng.integers(0, sizes, (64, 2))]

    def losses(padding_free: bool) -> list[float]:
        shape = BootstrapConfig(hidden_size=32, num_layers=2, num_heads=2, positional="rope")
        args = SFTConfig(
            output_dir=str(tmp_path / str(padding_free)), max_steps=4, per_device_train_batch_size=16,
            logging_steps=1, use_cpu=True, report_to=[], save_strategy="no", completion_only_loss=True,
            max_length=None, seed=0, data_seed=0, learning_rate=1e-2, disable_tqdm=True, padding_free=padding_free,
        )  # fmt: skip
        data = Dataset.from_dict(trl_ready(tokenize_rows(rows, tok), args))
        model = build_bootstrap_model(shape, tok, 0)
        trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
        batch = trainer.data_collator([data[i] for i in range(16)])
        assert (batch["input_ids"].shape[0] == 1) == padding_free  # one flattened row, no padding
        trainer.train()
        return [e["loss"] for e in trainer.state.log_history if "loss" in e]

    padded, flat = losses(False), losses(True)
    assert flat == pytest.approx(padded, rel=1e-3) and len(flat) == 4


def test_token_count_of_padded_and_padding_free_batches():
    """The ledger's trained tokens: 3 + 5 real tokens in a batch padded to 2 x 5 positions; none padded without."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from selfimprove.stages.train import TokenCount

    features = [{"input_ids": [1, 2, 3]}, {"input_ids": [4, 5, 6, 7, 8]}]
    padded = TokenCount(DataCollatorForLanguageModeling(pad_token_id=0))
    padded(features)
    padded(features[:1])
    assert (padded.real, padded.positions) == (8 + 3, 10 + 3)
    flat = TokenCount(DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True))
    flat(features)
    assert (flat.real, flat.positions) == (8, 8)
