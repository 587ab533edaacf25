"""``--rewrite``: regenerate the expected output of the core transcripts (or set REWRITE=1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite",
        action="store_true",
        default=False,
        help="rewrite tests/core/testdata/*.txt with the actual output (pytest tests/core ...)",
    )
