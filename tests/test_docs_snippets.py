"""Every ```python block of README.md and docs/**/*.md runs, so a snippet cannot break silently.

The blocks of one page run in order in one namespace (a page's first block may define the model its
later blocks use), in a temporary working directory, with matplotlib's Agg backend. A block that needs
the network (e.g. ``weights="imagenet"``) is marked by the line ``<!-- no-run: network -->`` just
above it; such blocks must be rare and are listed in :data:`NOT_RUN`, so a new one is a decision.
"""

import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = "<!-- no-run: network -->"
# (page, first line of the block) of every block that is not run, and why: it downloads.
NOT_RUN = {
    ("docs/guides/data.md", "from tfattr.data import keras_application, load_imagenette"),
}
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)


def pages():
    found = glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)
    files = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in found)
    return [f for f in files if FENCE.search(open(os.path.join(ROOT, f), encoding="utf-8").read())]


def blocks(page):
    """``(code, runs)`` of each python block of ``page``."""
    text = open(os.path.join(ROOT, page), encoding="utf-8").read()
    out = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        out.append((match.group(1), before != MARK))
    return out


def test_blocks_not_run_are_only_the_listed_network_ones():
    skipped = {(page, code.strip().splitlines()[0]) for page in pages() for code, runs in blocks(page) if not runs}
    assert skipped == NOT_RUN
    assert len(pages()) >= 20  # README and the site's pages with code: the walk finds them


@pytest.mark.parametrize("page", pages())
def test_page_snippets_run(page, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    try:
        for number, (code, runs) in enumerate(blocks(page), start=1):
            if runs:
                exec(compile(code, f"{page} (python block {number})", "exec"), namespace)
    finally:
        plt.close("all")
