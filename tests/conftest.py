import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
# Compiled DeepSpeed ops are cached here between runs (the first compile takes about a minute).
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "selfimprove-torch-extensions"))

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = REPO / "tests" / "tiny_addition.yaml"


def _is_study(path: Path) -> bool:
    import yaml

    return "arms" in (yaml.safe_load(path.read_text()) or {})


YAML_FILES = sorted((REPO / "recipes").rglob("*.yaml"))
STUDY_FILES = [p for p in YAML_FILES if _is_study(p)]  # recipes/studies/*: study files, not recipes
RECIPE_FILES = [p for p in YAML_FILES if p not in STUDY_FILES]


def pytest_configure(config):
    # --smoke assets (tiny stand-in models, local datasets) are built once per test session, in a fresh folder, unless
    # SELFIMPROVE_SMOKE_CACHE names one to reuse. CLI subprocesses inherit it.
    if "SELFIMPROVE_SMOKE_CACHE" not in os.environ:
        import tempfile

        os.environ["SELFIMPROVE_SMOKE_CACHE"] = tempfile.mkdtemp(prefix="selfimprove-smoke-")


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    """Local text for training a BPE tokenizer: GSM8K- and UltraFeedback-shaped rows, a few hundred KB."""
    import numpy as np

    from selfimprove.smoke.data import gsm8k_row, ultrafeedback_row

    rng = np.random.default_rng(0)
    rows = [gsm8k_row(rng) for _ in range(1500)]
    texts = [r["question"] + "\n" + r["answer"] for r in rows]
    texts += [u["prompt"] + "\n" + u["chosen"][-1]["content"] for u in (ultrafeedback_row(rng) for _ in range(1500))]
    assert sum(map(len, texts)) > 200_000
    return texts


@pytest.fixture(scope="session")
def bpe_tokenizer(corpus):
    from selfimprove.tiny_models import build_bpe_tokenizer

    return build_bpe_tokenizer(corpus, vocab_size=1024)


@pytest.fixture(scope="session")
def tiny_real(tmp_path_factory, bpe_tokenizer):
    """``tiny_real(model_type, classifier=False)``: a save_pretrained folder of a tiny random model of that class."""
    from selfimprove.tiny_models import build_tiny_model

    made: dict = {}

    def make(model_type: str, classifier: bool = False) -> str:
        key = (model_type, classifier)
        if key not in made:
            out = tmp_path_factory.mktemp(f"{model_type}{'-rm' if classifier else ''}")
            made[key] = str(build_tiny_model(model_type, bpe_tokenizer, out, classifier=classifier))
        return made[key]

    return make


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

    return subprocess.run(
        [sys.executable, "-m", "selfimprove", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        timeout=timeout,
    )
