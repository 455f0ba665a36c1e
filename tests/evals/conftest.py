"""A small real project in the SWE-bench schema: a git repo, a data set, an env spec.

`calc` has a bug (`add` subtracts). The environment setup commit comes first, the base
commit after it; the gold patch fixes `add`, the test patch adds the test that catches it.
The repo sits where `--git-mirror {root}/{owner}+{name}/repo` finds it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.evals.envimages import EnvOptions
from harness.evals.specs import EnvSpec, SpecRegistry

REPO = "harness-tests/calc"
VERSION = "1.0"
SPEC = {
    "python": "3.10",  # Debian has no 3.10: graded on bookworm's 3.11, recorded as such
    "pip_packages": ["pytest"],
    "install": "python -m pip install -e .",
    "test_cmd": "pytest -rA",  # swebench's TEST_PYTEST
    "log_parser": "pytest",
}
TEST_APT: tuple[str, ...] = ()  # the suite's default apt list is swebench's; tests skip it

SETUP_FILES = {
    "pyproject.toml": (
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '\n[project]\nname = "calc"\nversion = "1.0"\n'
    ),
    "calc/__init__.py": "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n",
    "tests/test_calc.py": "from calc import mul\n\n\ndef test_mul():\n    assert mul(3, 4) == 12\n",
    ".gitignore": "*.egg-info/\n__pycache__/\n",
}


def patch_text(*lines: str) -> str:
    """A diff from its lines (context lines of blank lines are a lone space)."""
    return "\n".join(lines) + "\n"


GOLD = patch_text(
    "diff --git a/calc/__init__.py b/calc/__init__.py",
    "--- a/calc/__init__.py",
    "+++ b/calc/__init__.py",
    "@@ -1,5 +1,5 @@",
    " def add(a, b):",
    "-    return a - b",
    "+    return a + b",
    " ",
    " ",
    " def mul(a, b):",
)
WRONG = patch_text(
    "diff --git a/calc/__init__.py b/calc/__init__.py",
    "--- a/calc/__init__.py",
    "+++ b/calc/__init__.py",
    "@@ -1,5 +1,5 @@",
    " def add(a, b):",
    "-    return a - b",
    "+    return a * b",
    " ",
    " ",
    " def mul(a, b):",
)
NOT_APPLYING = patch_text(
    "diff --git a/calc/__init__.py b/calc/__init__.py",
    "--- a/calc/__init__.py",
    "+++ b/calc/__init__.py",
    "@@ -1,2 +1,2 @@",
    " def subtract(a, b):",
    "-    return a + b",
    "+    return a - b",
)
TEST_PATCH = patch_text(
    "diff --git a/tests/test_calc.py b/tests/test_calc.py",
    "--- a/tests/test_calc.py",
    "+++ b/tests/test_calc.py",
    "@@ -1,5 +1,9 @@",
    "-from calc import mul",
    "+from calc import add, mul",
    " ",
    " ",
    " def test_mul():",
    "     assert mul(3, 4) == 12",
    "+",
    "+",
    "+def test_add():",
    "+    assert add(2, 3) == 5",
)


HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def env_options() -> EnvOptions:
    """The options the machine's base image was built with (scripts/setup adds the host's
    CA bundle when it has one), so tests reuse that base instead of building another."""
    return EnvOptions(ca_bundle=HOST_CA if HOST_CA.is_file() else None, apt_packages=TEST_APT)


def _git(repo: Path, *args: str) -> str:
    # Fixed identities and dates: the same commits every run, so the env image (keyed by
    # the setup commit) is built once per machine, not once per test.
    stamp = "2024-01-01T00:00:00Z"
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_AUTHOR_DATE": stamp,
        "GIT_COMMITTER_DATE": stamp,
    }
    out = subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def _commit(repo: Path, files: dict[str, str], message: str) -> str:
    if not (repo / ".git").exists():
        repo.mkdir(parents=True, exist_ok=True)
        _git(repo, "init", "-q", "-b", "main")
    for name, content in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(content)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


@dataclass(frozen=True)
class Project:
    root: Path  # holds mirrors/ and the data-set file
    repo: Path
    mirror: str  # the --git-mirror template
    dataset: Path
    specs_file: Path
    records: list[dict[str, str]]

    def registry(self) -> SpecRegistry:
        reg = SpecRegistry()
        reg.register(REPO, VERSION, EnvSpec.from_mapping(SPEC, source="tests"))
        return reg


def make_project(root: Path, n: int = 1) -> Project:
    """The repo and a data set of `n` instances of it (the same bug under different ids)."""
    repo = root / "mirrors" / "harness-tests+calc" / "repo"
    setup = _commit(repo, SETUP_FILES, "setup")
    _git(repo, "tag", "v0.9")
    base = _commit(repo, {"README.md": "# calc\n"}, "readme")
    records = [
        {
            "repo": REPO,
            "instance_id": f"harness-tests__calc-{i + 1}",
            "base_commit": base,
            "patch": GOLD,
            "test_patch": TEST_PATCH,
            "problem_statement": "add(2, 3) returns -1",
            "hints_text": "",
            "created_at": "2024-01-01T00:00:00Z",
            "version": VERSION,
            "FAIL_TO_PASS": json.dumps(["tests/test_calc.py::test_add"]),
            "PASS_TO_PASS": json.dumps(["tests/test_calc.py::test_mul"]),
            "environment_setup_commit": setup,
        }
        for i in range(n)
    ]
    dataset = root / "calc.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in records))
    specs_file = root / "specs.json"
    specs_file.write_text(json.dumps({REPO: {VERSION: SPEC}}))
    return Project(
        root=root,
        repo=repo,
        mirror=str(root / "mirrors" / "{owner}+{name}" / "repo"),
        dataset=dataset,
        specs_file=specs_file,
        records=records,
    )


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    yield make_project(tmp_path / "project", n=1)
