"""Starting policies: build a tiny from-scratch model and character tokenizer, or load any save_pretrained folder.

Both paths end in an ordinary folder that ``AutoModelForCausalLM`` / ``AutoTokenizer`` load as-is, so every later
stage (and vLLM, and users) treat a bootstrapped model exactly like a hub checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from selfimprove.core import seeding
from selfimprove.core.config import BootstrapConfig, Recipe
from selfimprove.core.integrity import check_sizes
from selfimprove.core.judge_prompts import eft_alphabet

SPECIALS = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}


def build_char_tokenizer(alphabet: str):
    """A fast tokenizer with one token per character; it adds BOS in front of every text."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS.values())}
    for ch in dict.fromkeys(alphabet):
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIALS["unk"]))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    bos = SPECIALS["bos"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab[bos])]
    )
    tok.decoder = decoders.Fuse()  # characters join with no separator
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=SPECIALS["eos"],
        pad_token=SPECIALS["pad"],
        unk_token=SPECIALS["unk"],
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def context_length(config) -> int | None:
    """The positions a model's config declares (None when it declares none)."""
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def bootstrap_config(cfg: BootstrapConfig, tokenizer):
    """The LlamaConfig of ``model.bootstrap``; 'nope' sets an infinite RoPE base as Lee et al. do."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size or 4 * cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        rope_theta=float("inf") if cfg.positional == "nope" else cfg.rope_theta,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def build_bootstrap_model(cfg: BootstrapConfig, tokenizer, seed: int):
    """A randomly initialised Llama from ``bootstrap_config``."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(bootstrap_config(cfg, tokenizer))


def run_alphabet(recipe: Recipe, task) -> str:
    """Every character a from-scratch policy reads or writes: the task's, plus the judge prompts' (EFT) and the
    proposal requests' (propose.mode 'task_native') when the policy also judges or proposes."""
    alphabet = task.alphabet()
    if recipe.judge.llm.eft_share:
        alphabet += eft_alphabet(recipe.judge.llm)
    if recipe.propose.mode == "task_native":
        alphabet += task.PROPOSE_MARK
    return alphabet


def prepare_base_model(recipe: Recipe, task, out_dir: Path) -> dict:
    """Write the round-0 policy to ``out_dir`` (a bootstrap build, or a copy of the tokenizer+config reference)."""
    if recipe.model.path is not None:
        return {"source": recipe.model.path}
    tokenizer = build_char_tokenizer(run_alphabet(recipe, task))
    model = build_bootstrap_model(recipe.model.bootstrap, tokenizer, seeding.int_seed(recipe.seed, "init"))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"source": "bootstrap", "parameters": sum(p.numel() for p in model.parameters())}


def base_model_path(recipe: Recipe, run_dir: Path) -> str:
    return recipe.model.path if recipe.model.path is not None else str(run_dir / "base_model")


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"  # generation appends on the right, so prompts pad on the left
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_policy(path: str, dtype: str = "float32"):
    import torch
    from transformers import AutoModelForCausalLM

    if Path(path).is_dir():
        check_sizes(Path(path))  # a checkpoint inside a finished stage: its files as the stage recorded them

    return AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
