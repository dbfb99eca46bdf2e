"""Write docs/config_reference.md from the recipe dataclasses' help texts (tests/test_config.py fails when stale).

Run: python scripts/config_reference.py
"""

from pathlib import Path

from selfimprove.core.config import Recipe
from selfimprove.core.typed_yaml import reference_markdown

OUT = Path(__file__).resolve().parent.parent / "docs" / "config_reference.md"
INTRO = (
    "Every recipe field, generated from `selfimprove/core/config/` and each task module's `Config` "
    "(`selfimprove/tasks/`) by `python scripts/config_reference.py` (a test fails when this page is stale). Set a "
    "field in the recipe YAML by its section, or on the command line by its dotted name: `--train.max_steps 200` (or "
    "`--train.max-steps 200`), the value read as YAML. How recipes, overlays and overrides fit together: "
    "[configuration.md](configuration.md)."
)


def render() -> str:
    return reference_markdown(Recipe, "Configuration reference", INTRO)


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
