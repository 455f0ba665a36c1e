"""Log parsers (swebench's) on real logs: pytest -rA, Django's runtests.py, sympy's runner.

The logs under logs/ are real runs, kept whole: pytest 9 on a small file with every
outcome; Django 4.2.16's own `tests/runtests.py --verbosity 2 --settings=test_sqlite
--parallel 1 basic.tests` with one assertion broken and one NameError added; sympy 1.12's
runner (what `bin/test` calls) on sympy/core/tests/test_eval.py, likewise broken.
"""

from __future__ import annotations

from pathlib import Path

from harness.evals.dataset import Instance
from harness.evals.grading import END, START, evaluate, extract_test_output
from harness.evals.specs import SpecRegistry

LOGS = Path(__file__).parent / "logs"


def parse(repo: str, version: str, name: str) -> dict[str, str]:
    reg = SpecRegistry()
    spec = reg.get(repo, version)
    assert spec is not None
    return reg.parser(repo, spec)((LOGS / name).read_text())


def test_pytest_rA() -> None:
    status = parse("pytest-dev/pytest", "5.4", "pytest_rA.log")
    assert status["tests/test_demo.py::test_ok"] == "PASSED"
    assert status["tests/test_demo.py::test_param[1-2]"] == "PASSED"
    assert status["tests/test_demo.py::test_fails"] == "FAILED"
    assert status["tests/test_demo.py::test_param[/tmp/x-None]"] == "FAILED"
    assert status["tests/test_demo.py::test_errors"] == "ERROR"
    assert status["tests/test_demo.py::test_xfails"] == "XFAIL"


def test_pytest_options_parser_shortens_path_ids() -> None:
    # requests / pylint / pydicom use parse_log_pytest_options: a parameter that is an
    # absolute path keeps only its last component (so ids match across machines).
    status = parse("psf/requests", "2.10", "pytest_rA.log")
    assert status["tests/test_demo.py::test_param[/x-None]"] == "FAILED"
    assert status["tests/test_demo.py::test_ok"] == "PASSED"


def test_django_runner() -> None:
    status = parse("django/django", "4.2", "django_runtests.log")
    assert status["test_eq (basic.tests.ModelTest.test_eq)"] == "FAILED"
    assert status["test_hash (basic.tests.ModelTest.test_hash)"] == "ERROR"
    assert status["test_hash_function (basic.tests.ModelTest.test_hash_function)"] == "PASSED"
    # A test with a docstring prints it on the next line, before "... ok"; swebench names
    # the test by that line, and so do SWE-bench's FAIL_TO_PASS lists for such tests.
    assert status["gettext_lazy objects work when saving model instances"] == "PASSED"
    distinct = "test_emptyqs_distinct (basic.tests.ModelTest.test_emptyqs_distinct)"
    assert status[distinct] == "SKIPPED"
    assert sum(1 for s in status.values() if s == "PASSED") == 57  # "Ran 61": 2 skip, 2 bad


def test_sympy_runner() -> None:
    status = parse("sympy/sympy", "1.12", "sympy_test.log")
    assert status["test_add_eval"] == "ERROR"
    assert status["test_evalpow_bug"] == "FAILED"
    assert status["test_pow_eval"] == "PASSED" and status["test_symbol_expand"] == "PASSED"
    # The expected failure ("f") is not a status swebench records; the last test's line
    # carries the file's "[FAIL]" verdict, so the parser does not see its "ok" either.
    assert "test_pow_eval_X1" not in status and "test_function" not in status


def test_grading_semantics_on_a_parsed_log() -> None:
    status = parse("django/django", "4.2", "django_runtests.log")
    inst = Instance(
        "django__django-1",
        "django/django",
        "abc",
        fail_to_pass=("test_eq (basic.tests.ModelTest.test_eq)",),
        pass_to_pass=(
            "test_hash_function (basic.tests.ModelTest.test_hash_function)",
            "test_not_in_the_log (basic.tests.X.test_not_in_the_log)",
        ),
    )
    f2p, p2p, resolved = evaluate(status, inst)
    assert f2p.failure == inst.fail_to_pass and not resolved
    # a required test that did not run counts as failed
    assert p2p.failure == ("test_not_in_the_log (basic.tests.X.test_not_in_the_log)",)
    fixed = {**status, "test_eq (basic.tests.ModelTest.test_eq)": "PASSED"}
    only = Instance(
        "i",
        "django/django",
        "abc",
        fail_to_pass=inst.fail_to_pass,
        pass_to_pass=inst.pass_to_pass[:1],
    )
    assert evaluate(fixed, only)[2] is True


def test_markers_bracket_the_test_output() -> None:
    log = f"setup noise\n+ : '{START}'\nPASSED a::b\n+ : '{END}'\nteardown\n"
    assert extract_test_output(log) == "'\nPASSED a::b\n+ : '"
    assert extract_test_output("the script died before the tests") is None
