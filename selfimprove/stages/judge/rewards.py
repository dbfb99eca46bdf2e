"""The run's judges as TRL reward functions, for online rounds (train.method 'grpo').

One function per judge, named after it, so TRL logs ``rewards/<judge>/mean`` and its weighted sum of them, with the
weights judge.weights normalised to sum to 1, is the judge stage's combined ``score`` (judge.combine 'mean'). A
judge that could not score a completion (an unparseable LLM verdict) gives None under judge.llm.on_unparseable
'drop' (TRL leaves it out of the group's baseline and gives it no advantage), else the judge stage's fill value.

A judge sees whole groups, as in the judge stage: TRL gives each process its share of a generation batch and a
group may straddle processes, so every function gathers all processes' completions and every process judges them
all (majority vote and pairwise LLM judging need the groups; a model judge shares its batches out over the processes
and gathers the scores, as in the judge stage), then takes back its own share. A reward model stays loaded for the
round (``JudgeEnv.cache``); an LLM judge is best served (judge.llm.backend 'openai'), since its 'hf' and 'vllm'
backends load the judge model at every generation step. The batch's judged rows stay in ``batch`` for the trainer
to keep as the round's rollouts, each with the judge stage's combined ``score``, which is TRL's reward.
"""

from __future__ import annotations

from selfimprove.stages.judge import JudgeEnv, judge_rows

# Columns TRL adds to a reward function's keyword arguments; the rest are the dataset's, one value per completion.
TRL_KWARGS = ("trainer_state", "log_extra", "log_metric", "environments", "completion_ids")
PROMPT_TEXT = "prompt_text"  # the row's own prompt (the user message); TRL's 'prompt' column is the formatted input


def _text(completion) -> str:
    """A completion as the judges read it: TRL hands a chat run's completions over as messages."""
    return completion if isinstance(completion, str) else "".join(m["content"] for m in completion)


class JudgeRewards:
    def __init__(self, env: JudgeEnv, eos_token_id: int):
        self.env, self.eos, self.batch = env, eos_token_id, []
        cfg = env.cfg
        weights = {n: float(cfg.weights.get(n, 1.0)) for n in cfg.judges}
        total = sum(weights.values())
        self.weights = [weights[n] / total for n in cfg.judges]
        self.functions = [self._function(name) for name in cfg.judges]

    def _function(self, name: str):
        def reward(prompts, completions, **columns):
            return self._scores(name, completions, columns)

        reward.__name__ = name  # TRL names its per-function metrics after it
        return reward

    def _scores(self, name: str, completions: list[str], columns: dict) -> list[float | None]:
        from accelerate import PartialState
        from accelerate.utils import gather_object

        state = PartialState()
        if name == self.env.cfg.judges[0]:  # TRL calls the functions in order: the first one judges the batch
            data = {c: v for c, v in columns.items() if c not in TRL_KWARGS}
            local = [
                {**{c: v[i] for c, v in data.items()}, "completion": _text(done), **self._ending(ids)}
                for i, (done, ids) in enumerate(zip(completions, columns["completion_ids"]))
            ]
            rows = gather_object(local) if state.num_processes > 1 else local
            rows = [{**{k: v for k, v in r.items() if k != PROMPT_TEXT}, "prompt": r[PROMPT_TEXT]} for r in rows]
            # Every process judges the whole batch, as in the (sharded) judge stage: a model judge splits its batches
            # over the processes and gathers the scores; a rule judge gives each the same. judge_rows adds each
            # judge's score (unparsed ones filled), the combined score and oracle_correct, as the judge stage does.
            self.batch = judge_rows(self.env, rows)[0]
        start = state.process_index * len(completions)
        drop = self.env.cfg.llm.on_unparseable == "drop"
        return [
            None if drop and name in row["judge_unparsed"].split(",") else row[f"score_{name}"]
            for row in self.batch[start : start + len(completions)]
        ]

    def _ending(self, ids: list[int]) -> dict:
        """As a generate stage records a sample: whether it ended with EOS, and its tokens without the EOS."""
        finished = self.eos in ids
        return {"finished": finished, "num_tokens": len(ids) - finished}
