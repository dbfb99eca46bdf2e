import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = REPO / "tests" / "tiny_addition.yaml"


@pytest.fixture
def tiny_recipe(tmp_path):
    from selfimprove.config import load_recipe

    return load_recipe(str(TINY_RECIPE), {"output_dir": str(tmp_path / "run")})


@pytest.fixture
def tiny_policy(tmp_path):
    """A 2-layer random Llama and character tokenizer saved as a save_pretrained folder."""
    from selfimprove.config import BootstrapConfig
    from selfimprove.model import build_bootstrap_model, build_char_tokenizer

    tok = build_char_tokenizer("0123456789+=")
    model = build_bootstrap_model(BootstrapConfig(hidden_size=32, num_layers=2, num_heads=2), tok, seed=0)
    path = tmp_path / "policy"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def run_cli(*args, cwd=None, timeout=600):
    import subprocess

    return subprocess.run([sys.executable, "-m", "selfimprove", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=timeout)
