"""Generation backends beside the in-process HF one (``selfimprove.generate.hf_generate``): an OpenAI-compatible server
client and the vLLM offline engine. All return, per prompt, ``num_samples`` dicts
{completion, finished, num_tokens, error}, in prompt order, so every stage sees the same results contract."""
