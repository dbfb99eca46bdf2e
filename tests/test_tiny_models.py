"""Tiny models of the classes real recipes use, with a BPE tokenizer trained on local text: they load through the
Auto classes as-is, tokenize losslessly, carry a ChatML template, and generate until the chat turn ends."""

import pytest

from selfimprove.core.prompts import PromptFormat

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("model_type, cls", [("qwen2", "Qwen2ForCausalLM"), ("llama", "LlamaForCausalLM")])
def test_same_class_models_load_with_the_auto_classes(tiny_real, model_type, cls):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_real(model_type)
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    assert type(model).__name__ == cls and model.config.vocab_size == len(tok)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert model.generation_config.eos_token_id == [tok.eos_token_id, tok.pad_token_id]


def test_reward_model_variant(tiny_real):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_real("qwen2", classifier=True))
    assert type(model).__name__ == "Qwen2ForSequenceClassification" and model.config.num_labels == 1


def test_bpe_tokenizer_is_subword_lossless_and_splits_digits(bpe_tokenizer):
    text = "Tom has 1,234 apples.\n\n  Café: \\boxed{42} <|im_end|>"
    ids = bpe_tokenizer(text)["input_ids"]
    assert bpe_tokenizer.decode(ids) == text
    pieces = bpe_tokenizer.tokenize("Tom has 1234 apples")
    assert "Ġapples" in pieces and pieces.count("1") == 1 and "12" not in pieces  # words merge, digits do not
    sentence = "Tom has some apples. How many apples does Tom have now?"
    assert len(bpe_tokenizer(sentence)["input_ids"]) < len(sentence) / 3  # subword, not characters


def test_chatml_template_and_prompt_format(tiny_real):
    from selfimprove.core.model import load_tokenizer

    tok = load_tokenizer(tiny_real("qwen2"))
    fmt = PromptFormat(chat=True, system="Be brief.", fewshot=(("1+1?", "2"),))
    assert fmt.texts(tok, ["2+2?"]) == [
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n1+1?<|im_end|>\n"
        "<|im_start|>assistant\n2<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    ]
    assert PromptFormat(system="Be brief.", fewshot=(("1+1=", "2"),)).texts(tok, ["2+2="]) == [
        "Be brief.\n\n1+1=2\n\n2+2="
    ]
    ids = fmt.encode(tok, ["2+2?"])[0]
    assert tok.decode(ids) == fmt.texts(tok, ["2+2?"])[0]  # the template's special tokens, no extra BOS


def test_generation_stops_at_the_end_of_the_turn(tiny_real):
    """A random model eventually samples <|im_end|>: the completion ends there, marked finished, without it."""
    from selfimprove.backends import Sampling
    from selfimprove.backends.hf import hf_generate
    from selfimprove.core.model import load_policy, load_tokenizer

    path = tiny_real("qwen2")
    model, tok = load_policy(path), load_tokenizer(path)
    prompts = PromptFormat(chat=True).texts(tok, ["Describe rain."])
    out = hf_generate(
        model,
        tok,
        prompts,
        Sampling(num_samples=64, temperature=3.0, max_new_tokens=40),
        0,
        8,
        add_special_tokens=False,
    )[0]
    finished = [s for s in out if s["finished"]]
    assert finished and all("<|im_end|>" not in s["completion"] and s["num_tokens"] < 40 for s in finished)
