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


# A test is end-to-end when it, a fixture it uses or a helper of its module starts a process (the CLI, accelerate,
# torchrun, a server), builds the --smoke models, or runs the whole loop or a study; every other test is a unit test
# (`-m unit`, about a minute). Read from the source, so a new test lands in its tier without anyone marking it.
END_TO_END = (
    "run_cli(",
    "subprocess",
    "run_loop(",
    "run_study(",
    "torch.distributed.run",
    "assets.",
    "Server(",
    "--smoke",
    '"run",',
    "_run_part(",
)


def _heavy_helpers(module) -> set[str]:
    """Names of the module's own functions that are end-to-end, directly or through another such function."""
    import inspect

    funcs = {n: f for n, f in vars(module).items() if inspect.isfunction(f) and f.__module__ == module.__name__}
    sources = {n: inspect.getsource(f) for n, f in funcs.items()}
    heavy = {n for n, src in sources.items() if any(m in src for m in END_TO_END)}
    while True:
        more = {n for n, src in sources.items() if n not in heavy and any(f"{h}(" in src for h in heavy)}
        if not more:
            return heavy
        heavy |= more


def _starts_processes(item, heavy: set[str]) -> bool:
    import inspect

    funcs = [item.function] + [d.func for defs in item._fixtureinfo.name2fixturedefs.values() for d in defs]
    for func in funcs:
        try:
            source = inspect.getsource(func)
        except (OSError, TypeError):
            continue
        if any(mark in source for mark in END_TO_END) or any(f"{h}(" in source for h in heavy):
            return True
    return False


def pytest_collection_modifyitems(config, items):
    helpers: dict = {}
    for item in items:
        module = item.module
        if module.__name__ not in helpers:
            helpers[module.__name__] = _heavy_helpers(module)
        if "slow" not in item.keywords and not _starts_processes(item, helpers[module.__name__]):
            item.add_marker(pytest.mark.unit)


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
    from selfimprove.smoke.tiny_models import build_bpe_tokenizer

    return build_bpe_tokenizer(corpus, vocab_size=1024)


@pytest.fixture(scope="session")
def tiny_real(tmp_path_factory, bpe_tokenizer):
    """``tiny_real(model_type, classifier=False)``: a save_pretrained folder of a tiny random model of that class."""
    from selfimprove.smoke.tiny_models import build_tiny_model

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
    from selfimprove.core.config import load_recipe

    return load_recipe(str(TINY_RECIPE), {"output_dir": str(tmp_path / "run")})


@pytest.fixture
def tiny_policy(tmp_path):
    """A 2-layer random Llama and character tokenizer saved as a save_pretrained folder."""
    from selfimprove.core.config import BootstrapConfig
    from selfimprove.core.model import build_bootstrap_model, build_char_tokenizer

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
