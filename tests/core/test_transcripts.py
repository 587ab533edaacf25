"""Runs every scenario in tests/core/testdata/*.txt through the transcript runner.

Each file is a datadriven transcript (see transcript.py). A mismatch fails the test with the
command, the expected and the actual output; ``--rewrite`` (or ``REWRITE=1``) rewrites the
files instead, to be reviewed with ``git diff``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .transcript import run

TESTDATA = Path(__file__).parent / "testdata"


@pytest.mark.parametrize("path", sorted(TESTDATA.glob("*.txt")), ids=lambda p: p.stem)
def test_transcript(path: Path, request: pytest.FixtureRequest) -> None:
    text = path.read_text()
    rewritten, diffs = run(text)
    if request.config.getoption("--rewrite", default=False) or os.environ.get("REWRITE") == "1":
        if rewritten != text:
            path.write_text(rewritten)
        return
    assert not diffs, f"{path.name}: {len(diffs)} mismatching block(s)\n\n" + "\n\n".join(diffs)
