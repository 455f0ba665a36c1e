"""Attacks on grading: patches that change how the tests run instead of fixing the bug.

Each patch leaves `calc.add` broken and tries to make the failing FAIL_TO_PASS test pass
anyway (a conftest that rewrites outcomes, addopts loading a plugin, a sitecustomize, a
module shadowing the package from the test directory, packaging that registers a pytest
plugin, a deleted test file, a write into .git). None may grade `resolved`.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.evals.dataset import Instance, load_instances
from harness.evals.envimages import EnvImages
from harness.evals.grading import GradeOptions, Grader
from harness.evals.repos import RepoCache
from harness.sandboxes import make_backend
from tests.evals.conftest import GOLD, Project, env_options
from tests.sandboxes.conftest import skip_unless_available

pytestmark = pytest.mark.docker

# A pytest plugin that reports every test as passed.
FORGE = (
    "import pytest\n\n\n"
    "@pytest.hookimpl(hookwrapper=True)\n"
    "def pytest_runtest_makereport(item, call):\n"
    "    outcome = yield\n"
    "    report = outcome.get_result()\n"
    '    report.outcome = "passed"\n'
    "    report.longrepr = None\n"
)
PLUGIN = {"forge_plugin.py": FORGE}
PYPROJECT_FORGE = '\n[tool.pytest.ini_options]\naddopts = "-p forge_plugin"\n'
ATTACKS: dict[str, dict[str, str | None]] = {
    "root conftest.py": {"conftest.py": FORGE},
    "tests/conftest.py": {"tests/conftest.py": FORGE},
    "pytest.ini addopts": {**PLUGIN, "pytest.ini": "[pytest]\naddopts = -p forge_plugin\n"},
    "tox.ini addopts": {**PLUGIN, "tox.ini": "[pytest]\naddopts = -p forge_plugin\n"},
    "setup.cfg addopts": {**PLUGIN, "setup.cfg": "[tool:pytest]\naddopts = -p forge_plugin\n"},
    "pyproject.toml addopts": {**PLUGIN, "pyproject.toml": "+" + PYPROJECT_FORGE},
    "sitecustomize": {
        **PLUGIN,
        "sitecustomize.py": "import os\nos.environ['PYTEST_ADDOPTS'] = '-p forge_plugin'\n",
    },
    "setup.py entry point": {
        **PLUGIN,
        "setup.py": (
            "from setuptools import setup\n\n"
            "setup(py_modules=['forge_plugin'],"
            " entry_points={'pytest11': ['forge = forge_plugin']})\n"
        ),
    },
    "shadowing module in tests/": {
        "tests/calc.py": "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n"
    },
    "deleted test file": {"tests/test_calc.py": None},
}


def patch_from(project: Project, base: str, changes: dict[str, str | None], tmp: Path) -> str:
    """A real `git diff` of `changes` on top of the base commit ("+..." appends)."""
    work = tmp / "work"
    subprocess.run(["git", "clone", "-q", str(project.repo), str(work)], check=True)
    subprocess.run(["git", "checkout", "-q", base], cwd=work, check=True)
    for name, content in changes.items():
        path = work / name
        if content is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if content.startswith("+"):
            content = path.read_text() + content[1:]
        path.write_text(content)
    subprocess.run(["git", "add", "-A"], cwd=work, check=True)
    out = subprocess.run(
        ["git", "diff", "--cached", "--binary", base],
        cwd=work,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


@pytest.fixture
def inst(project: Project, tmp_path: Path) -> Instance:
    skip_unless_available("docker")
    return load_instances(str(project.dataset), cache_dir=tmp_path / "hf")[0]


@pytest.fixture
async def grader(project: Project, cache_dir: Path) -> AsyncIterator[Grader]:
    async with make_backend("docker", cache_dir) as backend:  # type: ignore[attr-defined]
        repos = RepoCache(cache_dir, project.mirror)
        images = EnvImages(cache_dir, repos, env_options())
        yield Grader(backend, images, project.registry(), repos, GradeOptions(timeout_s=300.0))


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_a_patch_that_changes_how_tests_run_cannot_forge_a_pass(
    attack: str, project: Project, inst: Instance, grader: Grader, tmp_path: Path
) -> None:
    patch = patch_from(project, inst.base_commit, ATTACKS[attack], tmp_path)
    assert patch.strip()
    out = await grader.grade(inst, patch)
    log = out.files.get("eval.log", "")
    assert out.result.status == "unresolved", log
    assert out.result.fail_to_pass.failure == ("tests/test_calc.py::test_add",), log
    assert "back to the base commit" in log


async def test_the_guard_keeps_a_real_fix_that_also_adds_test_files(
    project: Project, inst: Instance, grader: Grader, tmp_path: Path
) -> None:
    changes: dict[str, str | None] = {"conftest.py": FORGE, "tests/test_extra.py": "x = 1\n"}
    forged = patch_from(project, inst.base_commit, changes, tmp_path)
    out = await grader.grade(inst, GOLD + forged)
    log = out.files["eval.log"]
    assert out.result.status == "resolved", log
    assert "back to the base commit: conftest.py, tests/test_extra.py" in log


async def test_a_patch_into_git_metadata_is_refused(inst: Instance, grader: Grader) -> None:
    evil = (
        "diff --git a/.git/hooks/post-checkout b/.git/hooks/post-checkout\n"
        "new file mode 100755\n--- /dev/null\n+++ b/.git/hooks/post-checkout\n"
        "@@ -0,0 +1,2 @@\n+#!/bin/sh\n+echo pwned\n"
    )
    out = await grader.grade(inst, GOLD + evil)
    assert out.result.status == "patch_failed" and ".git" in out.result.message


async def test_the_empty_patch_runs_the_tests_when_asked(inst: Instance, grader: Grader) -> None:
    out = await grader.grade(inst, "", run_empty=True)
    assert out.result.status == "unresolved", out.files.get("eval.log")
    assert out.result.fail_to_pass.failure == ("tests/test_calc.py::test_add",)
    assert out.result.pass_to_pass.success == ("tests/test_calc.py::test_mul",)
