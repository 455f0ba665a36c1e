"""Which repository paths are tests: context never shows them as source, and voting drops a
patch that touches nothing else."""

from __future__ import annotations

import re

_TEST_PATH = re.compile(
    r"(^|/)(tests?|testing)/|(^|/)test_[^/]*$|_tests?\.[a-z]+$|(^|/)conftest\.py$"
)


def is_test_path(path: str) -> bool:
    """A file under a tests/, test/ or testing/ directory, a test_*.* or *_test(s).* file, or
    a conftest.py (repository-relative, '/'-separated)."""
    return _TEST_PATH.search(path) is not None
