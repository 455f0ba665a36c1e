"""Grading with real Docker sandboxes: gold resolves; empty, wrong and broken patches do
not; environment, repository and spec failures become statuses, never exceptions."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.evals.dataset import Instance, load_instances
from harness.evals.envimages import EnvImages, EnvOptions
from harness.evals.grading import GradeOptions, Grader
from harness.evals.repos import RepoCache
from harness.evals.specs import EnvSpec, SpecRegistry
from harness.sandboxes import make_backend
from tests.evals.conftest import (
    GOLD,
    NOT_APPLYING,
    REPO,
    SPEC,
    VERSION,
    WRONG,
    Project,
    env_options,
    make_project,
    patch_text,
)
from tests.sandboxes.conftest import skip_unless_available

pytestmark = pytest.mark.docker


@pytest.fixture
def inst(project: Project, tmp_path: Path) -> Instance:
    skip_unless_available("docker")
    return load_instances(str(project.dataset), cache_dir=tmp_path / "hf")[0]


def grader_for(
    project: Project,
    cache: Path,
    backend: object,
    *,
    specs: SpecRegistry | None = None,
    env: EnvOptions | None = None,
    mirror: str | None = None,
    timeout: float = 300.0,
) -> Grader:
    repos = RepoCache(cache, mirror or project.mirror)
    images = EnvImages(cache, repos, env or env_options())
    return Grader(
        backend,  # type: ignore[arg-type]
        images,
        specs or project.registry(),
        repos,
        GradeOptions(timeout_s=timeout),
    )


@pytest.fixture
async def backend(cache_dir: Path) -> AsyncIterator[object]:
    async with make_backend("docker", cache_dir) as be:
        yield be


async def test_gold_resolves_wrong_and_empty_do_not(
    project: Project, inst: Instance, cache_dir: Path, backend: object
) -> None:
    grader = grader_for(project, cache_dir, backend)
    gold = await grader.grade(inst, GOLD, model="m")
    assert gold.result.status == "resolved", gold.files.get("eval.log")
    assert gold.result.fail_to_pass.success == ("tests/test_calc.py::test_add",)
    assert gold.result.pass_to_pass.success == ("tests/test_calc.py::test_mul",)
    # The spec asks for Python 3.10, which Debian does not ship: graded on 3.11, recorded.
    assert (gold.result.python_requested, gold.result.python_used) == ("3.10", "3.11")
    assert gold.result.image.startswith("harness-env:harness-tests__calc-1-")  # per instance
    assert {"env_image", "checkout", "apply", "tests"} <= set(gold.result.timings)
    log = gold.files["eval.log"]
    assert ">>>>> Applied Patch (git-apply)" in log and ">>>>> Applied Test Patch" in log
    assert "PASSED tests/test_calc.py::test_add" in log
    assert '"tests/test_calc.py::test_add": "PASSED"' in gold.files["report.json"]

    wrong = await grader.grade(inst, WRONG, candidate_id="c1")
    assert wrong.result.status == "unresolved" and wrong.result.candidate_id == "c1"
    assert wrong.result.fail_to_pass.failure == ("tests/test_calc.py::test_add",)
    assert wrong.result.pass_to_pass.success == ("tests/test_calc.py::test_mul",)
    assert "FAILED tests/test_calc.py::test_add" in wrong.files["eval.log"]

    empty = await grader.grade(inst, "  \n")
    assert empty.result.status == "empty_patch" and not empty.result.resolved


async def test_patch_that_does_not_apply(
    project: Project, inst: Instance, cache_dir: Path, backend: object
) -> None:
    out = await grader_for(project, cache_dir, backend).grade(inst, NOT_APPLYING)
    assert out.result.status == "patch_failed"
    assert "patch failed" in out.result.message
    assert ">>>>> Patch Apply Failed" in out.files["eval.log"]


async def test_broken_test_patch(
    project: Project, inst: Instance, cache_dir: Path, backend: object
) -> None:
    broken = dataclasses.replace(inst, test_patch=NOT_APPLYING.replace("calc/", "tests/"))
    out = await grader_for(project, cache_dir, backend).grade(broken, GOLD)
    assert out.result.status == "test_patch_failed"
    assert ">>>>> Test Patch Apply Failed" in out.files["eval.log"]


async def test_tests_run_without_network_and_install_changes_are_kept(
    project: Project, inst: Instance, cache_dir: Path, backend: object
) -> None:
    probe = "python -c \"import socket; socket.create_connection(('pypi.org', 443), 5)\""
    spec = {
        **SPEC,
        # A tracked file changed at install time (like sphinx's tox.ini edit) must be
        # changed at test time too, on top of the instance's checkout.
        "pre_install": ["echo 'INSTALL_MARK = 1' >> calc/__init__.py"],
        "test_cmd": [
            f"{probe} && echo NETWORK-ON || echo NETWORK-OFF",
            "grep -c INSTALL_MARK calc/__init__.py",
            "pytest -rA",
        ],
    }
    specs = SpecRegistry()
    specs.register(REPO, VERSION, EnvSpec.from_mapping(spec))
    out = await grader_for(project, cache_dir, backend, specs=specs).grade(inst, GOLD)
    log = out.files["eval.log"]
    assert out.result.status == "resolved", log
    assert "NETWORK-OFF" in log and "NETWORK-ON" not in log.replace("echo NETWORK-ON", "")
    assert "Install-time changes to tracked files applied" in log


async def test_image_build_failure_is_a_status_with_its_log(
    project: Project, inst: Instance, cache_dir: Path, backend: object
) -> None:
    specs = SpecRegistry()
    bad = {**SPEC, "pre_install": ["echo building && exit 3"]}
    specs.register(REPO, VERSION, EnvSpec.from_mapping(bad))
    out = await grader_for(project, cache_dir, backend, specs=specs).grade(inst, GOLD)
    assert out.result.status == "env_build_failed"
    assert "returned a non-zero code: 3" in out.result.message
    log_path = out.result.message.split("(log: ")[1].rstrip(")")
    assert Path(log_path).is_file() and "echo building && exit 3" in Path(log_path).read_text()
    assert "exit 3" in out.files["env_build.log"]


async def test_missing_mirror_unknown_spec_and_official_without_registry(
    project: Project, inst: Instance, cache_dir: Path, backend: object, tmp_path: Path
) -> None:
    missing = str(tmp_path / "nowhere" / "{owner}+{name}")
    out = await grader_for(project, cache_dir, backend, mirror=missing).grade(inst, GOLD)
    assert out.result.status == "repo_failed" and "no mirror of harness-tests/calc" in (
        out.result.message
    )
    other = dataclasses.replace(inst, version="9.9")
    out = await grader_for(project, cache_dir, backend).grade(other, GOLD)
    assert out.result.status == "no_spec" and "9.9" in out.result.message
    official = EnvOptions(mode="official", pull_timeout_s=60)
    out = await grader_for(project, cache_dir, backend, env=official).grade(inst, GOLD)
    assert out.result.status == "env_build_failed"
    assert "could not pull the official image swebench/sweb.eval.x86_64." in out.result.message


async def test_timeout(project: Project, inst: Instance, cache_dir: Path, backend: object) -> None:
    specs = SpecRegistry()
    specs.register(
        REPO, VERSION, EnvSpec.from_mapping({**SPEC, "test_cmd": ["sleep 60", "pytest -rA"]})
    )
    grader = grader_for(project, cache_dir, backend, specs=specs, timeout=3)
    out = await grader.grade(inst, GOLD)
    assert out.result.status == "timeout" and out.result.timings["tests"] < 30


def test_commits_are_the_same_every_run(tmp_path: Path) -> None:
    # The env image is keyed by the setup commit: fixed commits let tests share one image.
    a = make_project(tmp_path / "a").records[0]
    b = make_project(tmp_path / "b").records[0]
    assert (
        a["base_commit"] == b["base_commit"]
        and a["environment_setup_commit"] == (b["environment_setup_commit"])
    )


LAYOUT_TEST = patch_text(
    "diff --git a/tests/test_layout.py b/tests/test_layout.py",
    "new file mode 100644",
    "--- /dev/null",
    "+++ b/tests/test_layout.py",
    "@@ -0,0 +1,9 @@",
    "+import os",
    "+import sys",
    "+",
    "+import calc",
    "+",
    "+",
    "+def test_source_tree_is_on_sys_path():",
    "+    root = os.path.dirname(os.path.dirname(os.path.abspath(calc.__file__)))",
    "+    assert root in [os.path.abspath(p) for p in sys.path]",
)


async def test_editable_installs_put_the_source_tree_on_sys_path(
    project: Project, inst: Instance, cache_dir: Path, backend: object
) -> None:
    # Issue 14.1: pylint loads its checkers by mapping files to modules through sys.path
    # (astroid's modpath_from_file). `calc` has a flat layout, for which setuptools' PEP 660
    # default is an import hook that leaves the tree off sys.path; the image build (isolated,
    # newest setuptools) and the grading re-install (the prefix's setuptools) both make one.
    layout = dataclasses.replace(
        inst,
        test_patch=inst.test_patch + LAYOUT_TEST,
        fail_to_pass=(*inst.fail_to_pass, "tests/test_layout.py::test_source_tree_is_on_sys_path"),
    )
    out = await grader_for(project, cache_dir, backend).grade(layout, GOLD)
    log = out.files["eval.log"]
    assert out.result.status == "resolved", log
    assert "PASSED tests/test_layout.py::test_source_tree_is_on_sys_path" in log
    assert "editable" in log  # the re-install before the tests made an editable install


LINKED_TEST = patch_text(
    "diff --git a/tests/test_linked.py b/tests/test_linked.py",
    "new file mode 100644",
    "--- /dev/null",
    "+++ b/tests/test_linked.py",
    "@@ -0,0 +1,16 @@",
    "+import os",
    "+import subprocess",
    "+import sys",
    "+import tempfile",
    "+",
    "+import pytest",
    "+",
    "+",
    "+def test_a_linked_interpreter_is_the_same_environment():",
    "+    bindir = os.path.join(tempfile.mkdtemp(), 'bin')",
    "+    os.makedirs(bindir)",
    "+    os.symlink(sys.executable, os.path.join(bindir, 'python'))",
    "+    code = 'import sys, pytest; print(sys.prefix); print(pytest.__file__)'",
    "+    run = [os.path.join(bindir, 'python'), '-c', code]",
    "+    out = subprocess.run(run, capture_output=True, text=True).stdout.split()",
    "+    assert out == [sys.prefix, pytest.__file__]",
)


async def test_a_linked_interpreter_keeps_the_environments_packages(
    project: Project, inst: Instance, cache_dir: Path, backend: object
) -> None:
    # tox --current-env (sphinx's test command) runs the tests with a symlink to the
    # environment's interpreter in .tox/<env>/bin. From a venv, that link started Debian's
    # bare Python (a venv is found from the path it was started by): sphinx's tests could
    # not import docutils. The environment is a prefix of its own, found through any link.
    linked = dataclasses.replace(
        inst,
        test_patch=inst.test_patch + LINKED_TEST,
        fail_to_pass=(
            *inst.fail_to_pass,
            "tests/test_linked.py::test_a_linked_interpreter_is_the_same_environment",
        ),
    )
    out = await grader_for(project, cache_dir, backend).grade(linked, GOLD)
    log = out.files["eval.log"]
    assert out.result.status == "resolved", log
    assert "PASSED tests/test_linked.py::test_a_linked_interpreter_is_the_same_environment" in log


async def test_a_setup_py_develop_install_is_importable_from_outside_the_tree(
    project: Project, inst: Instance, cache_dir: Path, backend: object
) -> None:
    # Projects without a pyproject.toml (sphinx 3.x, old sympy) install through pip's legacy
    # `setup.py develop`, whose .pth goes to setuptools' scheme (lib/pythonX.Y/site-packages),
    # not pip's. `pytest` started by its console script does not put the tree on sys.path,
    # so `from calc import mul` in tests/ only works if that .pth is read: before the
    # prefix's two package directories were one, every such test failed to import.
    legacy = {
        **SPEC,
        "python": "3.9",  # bullseye's: Debian's 3.9 keeps setuptools off its prefix scheme
        "install": "rm -f pyproject.toml"
        ' && printf \'from setuptools import setup\\nsetup(name="calc", version="1.0")\\n\''
        " > setup.py && python -m pip install -e .",
    }
    specs = SpecRegistry()
    specs.register(REPO, VERSION, EnvSpec.from_mapping(legacy, source="tests"))
    out = await grader_for(project, cache_dir, backend, specs=specs).grade(inst, GOLD)
    log = out.files["eval.log"]
    assert "setup.py develop" in log  # the legacy mode ran, not a PEP 660 build
    assert out.result.status == "resolved", log
