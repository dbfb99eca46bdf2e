"""How a prompt row becomes the model's input: one rendering for generation, evaluation, the probe, training rows,
IFD and ``compare``, so the model is trained on exactly the text it is sampled with.

A row's ``prompt`` is the user message (the generic task has already filled its prompt template). ``PromptFormat``
adds the run's constant parts around it: an optional system prompt and few-shot examples, and, with
``generate.chat_template``, the tokenizer's chat template (system turn, one user/assistant turn pair per example,
the user turn, the assistant header). Without a chat template the parts are joined as plain text: the system
prompt, then each example's prompt followed directly by its completion, each part ending in a blank line.
"""

from __future__ import annotations

from dataclasses import dataclass

# A round prompt's lineage when the run proposes prompts: the task's own prompts carry these defaults (RunContext.
# round_prompts), the propose stage's who wrote them, from which parent, by which operation, and their pass rate.
PROPOSAL_LINEAGE = {"proposed_by": "task", "parent_prompt": "", "operation": "", "pass_rate": -1.0}


@dataclass(frozen=True)
class PromptFormat:
    chat: bool = False
    system: str = ""
    fewshot: tuple[tuple[str, str], ...] = ()  # (prompt, completion) pairs, in order

    def messages(self, prompt: str) -> list[dict]:
        turns = [{"role": "system", "content": self.system}] if self.system else []
        for p, c in self.fewshot:
            turns += [{"role": "user", "content": p}, {"role": "assistant", "content": c}]
        return turns + [{"role": "user", "content": prompt}]

    def plain(self, prompt: str) -> str:
        parts = ([self.system] if self.system else []) + [p + c for p, c in self.fewshot]
        return "".join(part + "\n\n" for part in parts) + prompt

    def uses_template(self, tokenizer) -> bool:
        return self.chat and bool(getattr(tokenizer, "chat_template", None))

    def texts(self, tokenizer, prompts: list[str]) -> list[str]:
        """Each prompt as the model sees it, ready for the completion to follow."""
        if self.uses_template(tokenizer):
            return [
                tokenizer.apply_chat_template(self.messages(p), tokenize=False, add_generation_prompt=True)
                for p in prompts
            ]
        return [self.plain(p) for p in prompts]

    def encode(self, tokenizer, prompts: list[str]) -> list[list[int]]:
        """Token ids of ``texts``: a chat-formatted text already holds its special tokens, a plain one gets the
        tokenizer's own (BOS where it adds one)."""
        if not prompts:
            return []
        return tokenizer(self.texts(tokenizer, prompts), add_special_tokens=not self.uses_template(tokenizer))[
            "input_ids"
        ]


def encode_completions(tokenizer, completions: list[str]) -> list[list[int]]:
    """Completion token ids followed by EOS, the way they are trained and scored."""
    return [c + [tokenizer.eos_token_id] for c in tokenizer(completions, add_special_tokens=False)["input_ids"]]


def is_proposed(row: dict) -> bool:
    """A prompt that came through the propose stage (every one has an operation; the task's own pool has none)."""
    return bool(row.get("operation"))


def prompt_key(text: str) -> str:
    """A prompt as compared for exclusion from training: whitespace differences do not make another prompt."""
    return " ".join(text.split())


def prompt_content(row: dict) -> str:
    """A prompt row's own text: ``source_prompt`` where the task filled a template, else the prompt."""
    return row.get("source_prompt") or row["prompt"]
