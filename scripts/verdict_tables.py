"""Regenerate the verdict and arms tables in the docs from the committed results bundles (results/<study>/study.json).

python scripts/verdict_tables.py            # rewrite every verdicts / arms block in README.md and docs/
python scripts/verdict_tables.py --check    # exit 1, naming the file, if any block differs from its bundle
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from selfimprove.tools.results import blocks, render

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Only check; change nothing.")
    args = parser.parse_args()
    stale = []
    for doc in DOCS:
        text = doc.read_text()
        new = render(text, REPO / "results")
        if new != text:
            stale.append(doc)
            if not args.check:
                doc.write_text(new)
        for name in blocks(text):
            print(f"{doc.relative_to(REPO)}: tables of results/{name}")
    if stale and args.check:
        print("out of date with their bundles: " + ", ".join(str(d.relative_to(REPO)) for d in stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
