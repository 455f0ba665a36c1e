"""Which paths grading puts back: the rules, without Docker (test_forgery.py attacks them)."""

from __future__ import annotations

import pytest

from harness.evals.testguard import (
    named_in_commands,
    patch_paths,
    protected,
    status_paths,
    touches_git_dir,
)


@pytest.mark.parametrize(
    "path",
    [
        "conftest.py",
        "sympy/core/tests/test_basic.py",
        "tests/calc.py",
        "testing/python/collect.py",  # pytest's own tests
        "pytest.ini",
        "sub/tox.ini",
        "setup.cfg",
        "pyproject.toml",
        "setup.py",
        "sitecustomize.py",
        "lib/usercustomize.py",
        "calc/hook.pth",
        "calc/core.cpython-39-x86_64-linux-gnu.so",
        "calc/__init__.pyc",
        "django/contrib/auth/tests.py",
        "calc/test_things.py",
        "tests",  # a symlink or file in place of the test directory
    ],
)
def test_test_infrastructure_is_protected(path: str) -> None:
    assert protected(path)


@pytest.mark.parametrize(
    "path", ["calc/__init__.py", "src/_pytest/terminal.py", "sympy/core/basic.py", "doc/conf.py"]
)
def test_the_code_under_test_is_not(path: str) -> None:
    assert not protected(path)


def test_files_the_test_command_runs_are_protected() -> None:
    named = named_in_commands(
        [
            "PYTHONWARNINGS='ignore::UserWarning' bin/test -C --verbose",
            "./tests/runtests.py --verbosity 2 --settings=test_sqlite",
            "tox --current-env -epy39 -v --",
            "python ./scripts/runner.py -q && grep -c MARK calc/__init__.py",
        ]
    )
    assert named == {"bin/test", "tests/runtests.py", "scripts/runner.py"}
    assert protected("scripts/runner.py", named) and not protected("scripts/runner.py")


def test_patch_paths_reads_every_kind_of_header() -> None:
    patch = "\n".join(
        [
            "diff --git a/calc/x.py b/calc/y.py",
            "similarity index 90%",
            "rename from calc/x.py",
            "rename to calc/y.py",
            'diff --git "a/te st/\\303\\251.py" "b/te st/\\303\\251.py"',
            '--- "a/te st/\\303\\251.py"',
            '+++ "b/te st/\\303\\251.py"',
            "@@ -1 +1 @@",
            "-a",
            "+b",
            "--- a/conftest.py\t2020-01-01 00:00:00",
            "+++ b/conftest.py\t2020-01-01 00:00:00",
            "*** a/ctx.py",
            "--- b/ctx.py",
            "*** 1,5 ****",
            "--- 1,5 ----",
            "--- /dev/null",
            "+++ b/tests/new.py",
        ]
    )
    assert patch_paths(patch) == {
        "calc/x.py",
        "calc/y.py",
        "te st/é.py",
        "conftest.py",
        "ctx.py",
        "tests/new.py",
    }


def test_git_status_entries_and_git_metadata() -> None:
    out = " M setup.cfg\0?? tests/x.py\0R  new.py\0old.py\0!! build/\0"
    assert status_paths(out) == {
        (" M", "setup.cfg"),
        ("??", "tests/x.py"),
        ("R ", "new.py"),
        ("R ", "old.py"),
        ("!!", "build"),
    }
    assert touches_git_dir({"a.py", ".git/hooks/pre-commit"})
    assert touches_git_dir({"sub/.git/config"}) and not touches_git_dir({".github/x.yml"})
