"""Tiny random models of the classes real recipes use, with a real subword tokenizer, built locally (no hub).

``build_bpe_tokenizer`` trains a byte-level BPE on local text with ``tokenizers``, splitting text the way Qwen2's
tokenizer does (digits one by one, a leading space kept with its word), with ChatML special tokens and chat
template: ``<|im_end|>`` ends an assistant turn and is the EOS, ``<|endoftext|>`` pads. ``build_tiny_model`` makes a
randomly initialised model of any transformers architecture (``qwen2``, ``llama``, ...) from a tiny config, causal LM
or sequence classifier (a reward model). Both save as ordinary ``save_pretrained`` folders that ``AutoTokenizer`` /
``AutoModelForCausalLM`` / ``AutoModelForSequenceClassification`` load as-is, so every stage treats them exactly like
a hub checkpoint of that family. Tests, ``--smoke`` runs and scripts/gpu_check.py build their models here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
# Qwen2's pre-tokenisation pattern: contractions, letters with an optional leading non-letter, single digits,
# punctuation runs, newlines, spaces.
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
CHATML = (
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'"
    " + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def build_bpe_tokenizer(texts, vocab_size: int = 2048, chat: bool = True):
    """A byte-level BPE tokenizer trained on ``texts`` (an iterable of strings). With ``chat`` it has the ChatML
    template and ends turns (EOS) with ``<|im_end|>``, as instruct checkpoints do; without, EOS is ``<|endoftext|>``."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, IM_START, IM_END],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END if chat else PAD,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
        chat_template=CHATML if chat else None,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=1 << 20,
    )


@dataclass
class TinySize:
    """A tiny config; head_dim = hidden_size / num_heads stays >= 32, which vLLM's CPU attention needs."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    num_kv_heads: int = 1
    intermediate_size: int = 128
    max_position_embeddings: int = 2048


def tiny_config(model_type: str, tokenizer, size: TinySize = TinySize(), **overrides):
    """The architecture's own config class (``AutoConfig.for_model``) at tiny size, wired to the tokenizer's ids."""
    from transformers import AutoConfig

    ids = dict(
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.pad_token_id,
    )
    return AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads,
        num_key_value_heads=size.num_kv_heads,
        max_position_embeddings=size.max_position_embeddings,
        tie_word_embeddings=True,
        **ids,
        **overrides,
    )


def build_tiny_model(
    model_type: str,
    tokenizer,
    out_dir: str | Path,
    size: TinySize = TinySize(),
    seed: int = 0,
    classifier: bool = False,
) -> Path:
    """A random-initialised ``model_type`` model (causal LM, or a 1-label sequence classifier) with ``tokenizer``,
    saved to ``out_dir``. A chat tokenizer's turn end and the pad token both stop generation, as in Qwen2.5-Instruct's
    generation_config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, GenerationConfig

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    if classifier:
        model = AutoModelForSequenceClassification.from_config(tiny_config(model_type, tokenizer, size, num_labels=1))
    else:
        model = AutoModelForCausalLM.from_config(tiny_config(model_type, tokenizer, size))
        stops = list(dict.fromkeys([tokenizer.eos_token_id, tokenizer.pad_token_id]))
        model.generation_config = GenerationConfig(eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
