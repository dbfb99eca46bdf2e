"""Local stand-ins for the hub datasets the shipped recipes name, with the same columns, splits and folder layout.

- ``openai/gsm8k`` (config ``main``; splits train, test): ``question`` and ``answer``, the answer in GSM8K's own
  shape, worked steps with ``<<a+b=c>>`` calculator notes and a final ``#### N`` line. Problems are one-step word
  problems with small numbers, so a tiny model trained for seconds gets some of them right.
- ``HuggingFaceH4/ultrafeedback_binarized`` (splits train_prefs, test_prefs): ``prompt``, ``prompt_id``, ``chosen``
  and ``rejected`` (user + assistant message lists), ``messages``, ``score_chosen``, ``score_rejected`` (1-10).
Each is written as a hub-layout folder (parquet shards named ``<split>-00000-of-00001.parquet`` and a README whose
``configs`` metadata names them), so ``datasets.load_dataset(folder, config, split=...)`` reads it through the same
code path as the hub id.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

NAMES = ["Tom", "Ana", "Lee", "Mia", "Sam", "Ivy", "Max", "Zoe"]
ITEMS = ["apples", "books", "stamps", "coins", "pencils", "shells", "cards", "marbles"]
TOPICS = ["the sea", "rain", "a garden", "music", "the moon", "bread", "trains", "winter", "a river", "cats"]
ASKS = [
    "Write a short note about {t}.",
    "Describe {t} in one sentence.",
    "Tell me something nice about {t}.",
    "Give a friendly tip about {t}.",
]
GOOD = [
    "{T} is calm and lovely. A short note: enjoy {t} every day.",
    "Here is one sentence: {t} makes people happy.",
    "A nice fact: {t} is gentle, and many people love {t}.",
    "Tip: spend a quiet moment with {t}; it helps.",
]
BAD = ["I don't know.", "No.", "{t} {t} {t}", "Ask someone else."]


def gsm8k_row(rng: np.random.Generator) -> dict:
    name, items = str(rng.choice(NAMES)), str(rng.choice(ITEMS))
    kind = int(rng.integers(3))
    if kind == 0:
        a, b = (int(x) for x in rng.integers(1, 10, 2))
        c, expr = a + b, f"{a}+{b}"
        question = f"{name} has {a} {items}. {name} buys {b} more. How many {items} does {name} have now?"
        step = f"{name} has {a} + {b} = <<{expr}={c}>>{c} {items} now."
    elif kind == 1:
        a, b = sorted(int(x) for x in rng.integers(1, 10, 2))[::-1]
        c, expr = a - b, f"{a}-{b}"
        question = f"{name} has {a} {items} and gives away {b}. How many {items} are left?"
        step = f"{a} - {b} = <<{expr}={c}>>{c} {items} are left."
    else:
        a, b = (int(x) for x in rng.integers(1, 6, 2))
        c, expr = a * b, f"{a}*{b}"
        question = f"{name} buys {a} bags with {b} {items} in each bag. How many {items} does {name} buy?"
        step = f"{name} buys {a} * {b} = <<{expr}={c}>>{c} {items}."
    return {"question": question, "answer": f"{step}\n#### {c}"}


def ultrafeedback_row(rng: np.random.Generator) -> dict:
    t = str(rng.choice(TOPICS))
    prompt = str(rng.choice(ASKS)).format(t=t)
    good = str(rng.choice(GOOD)).format(t=t, T=t[0].upper() + t[1:])
    bad = str(rng.choice(BAD)).format(t=t)
    turn = lambda text: [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}]  # noqa: E731
    return {
        "prompt": prompt,
        "prompt_id": hashlib.sha256(prompt.encode()).hexdigest(),
        "chosen": turn(good),
        "rejected": turn(bad),
        "messages": turn(good),
        "score_chosen": float(rng.integers(7, 11)),
        "score_rejected": float(rng.integers(1, 5)),
    }


def boxed_solution(row: dict) -> str:
    """An instruct model's answer to a GSM8K-shaped row: the worked step, then the final answer boxed."""
    step, final = row["answer"].split("\n#### ")
    return f"{_strip_notes(step)} The answer is \\boxed{{{final}}}."


def _strip_notes(step: str) -> str:
    """'a + b = <<a+b=c>>c x' -> 'a + b = c x': the calculator notes are GSM8K's, not what a model writes."""
    head, rest = step.split("<<", 1)
    return head + rest.split(">>", 1)[1]


def write_hub_folder(folder: Path, configs: dict[str, dict[str, list[dict]]]) -> Path:
    """Write ``{config: {split: rows}}`` as parquet shards plus the README ``configs`` metadata the hub uses."""
    from datasets import Dataset

    meta = ["---", "configs:"]
    for config, splits in configs.items():
        sub = "data" if config == "default" else config
        meta += [f"- config_name: {config}", "  data_files:"]
        for split, rows in splits.items():
            (folder / sub).mkdir(parents=True, exist_ok=True)
            Dataset.from_list(rows).to_parquet(str(folder / sub / f"{split}-00000-of-00001.parquet"))
            meta += [f"  - split: {split}", f"    path: {sub}/{split}-*"]
    (folder / "README.md").write_text("\n".join(meta + ["---", "Local stand-in written by selfimprove --smoke.", ""]))
    return folder


def gsm8k(folder: Path, seed: int = 0, train: int = 2000, test: int = 200) -> Path:
    rng = np.random.default_rng([seed, 8])
    return write_hub_folder(
        folder,
        {"main": {"train": [gsm8k_row(rng) for _ in range(train)], "test": [gsm8k_row(rng) for _ in range(test)]}},
    )


def ultrafeedback(folder: Path, seed: int = 0, train: int = 1000, test: int = 100) -> Path:
    rng = np.random.default_rng([seed, 9])
    return write_hub_folder(
        folder,
        {
            "default": {
                "train_prefs": [ultrafeedback_row(rng) for _ in range(train)],
                "test_prefs": [ultrafeedback_row(rng) for _ in range(test)],
            }
        },
    )


# Hub dataset id -> (writer, what it stands in for). A recipe naming another hub dataset cannot run --smoke.
DATASETS = {"openai/gsm8k": gsm8k, "gsm8k": gsm8k, "HuggingFaceH4/ultrafeedback_binarized": ultrafeedback}
