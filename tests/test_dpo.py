"""The DPO path's checks and chat-template prompts identical in generation and training (the DPO recipes themselves run
end to end in test_recipes.py)."""

import pytest

pytestmark = pytest.mark.unit


def test_dpo_refuses_a_recipe_without_pairs():
    from selfimprove.core.config import load_recipe
    from selfimprove.core.typed_yaml import ConfigError

    with pytest.raises(ConfigError, match="filter.pairs is 'none'"):
        load_recipe(None, {"train.method": "dpo"})


def test_chat_template_prompts_match_between_generation_and_training(tiny_policy):
    from selfimprove.core.model import load_tokenizer
    from selfimprove.core.prompts import PromptFormat
    from selfimprove.stages.train import tokenize_rows

    tok = load_tokenizer(tiny_policy)
    tok.chat_template = (
        "{% for m in messages %}<s>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}={% endif %}"
    )
    rows = [{"prompt": "12+3", "completion": "51"}]
    fmt = PromptFormat(chat=True)
    assert fmt.texts(tok, ["12+3"]) == ["<s>12+3="]
    out = tokenize_rows(rows, tok, fmt)
    prompt_ids = tok("<s>12+3=", add_special_tokens=False)["input_ids"]
    assert out["input_ids"][0][: len(prompt_ids)] == prompt_ids  # one BOS, from the template, not two
    assert out["completion_mask"][0] == [0] * len(prompt_ids) + [1] * 3  # "5", "1", EOS
