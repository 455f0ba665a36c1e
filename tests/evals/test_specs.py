"""Specs from the swebench package, registered specs, Python substitution, Dockerfiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.evals.dockerfiles import (
    SETUP_DIFF,
    SWEBENCH_APT,
    env_dockerfile,
    instance_dockerfile,
    scm_version,
    suite_dockerfile,
)
from harness.evals.envimages import official_image
from harness.evals.requirements import environment_yml_requirements, requirements_txt
from harness.evals.specs import (
    EnvSpec,
    SpecRegistry,
    conda_to_pip,
    debian_python,
    directives_for,
    pip_requirements,
)
from tests.evals.conftest import REPO, SPEC, TEST_PATCH, VERSION


def test_swebench_specs_are_read_not_retyped() -> None:
    reg = SpecRegistry()
    requests = reg.get("psf/requests", "2.10")
    assert requests is not None
    assert (requests.python, requests.packages, requests.install) == (
        "3.9",
        "pytest",
        "python -m pip install .",
    )
    assert requests.test_cmd == ("pytest -rA",) and "swebench" in requests.source
    django = reg.get("django/django", "3.0")
    assert django is not None and django.packages == "requirements.txt"
    assert django.reqs_paths == ("tests/requirements/py3.txt",)
    assert django.directive_style == "django"
    assert any("locale-gen" in c for c in django.eval_commands)
    assert reg.get("psf/requests", "99.0") is None
    xarray = reg.get("pydata/xarray", "0.12")  # pinned for 3.10, run on 3.11: one pin moves
    assert xarray is not None and "numpy==1.23.2" in xarray.pip_packages
    assert "numpy==1.23.0" not in xarray.pip_packages and "pandas==1.5.3" in xarray.pip_packages
    assert set(xarray.pip_packages) <= set(xarray.constraints)  # environment.yml obeys them
    assert "setuptools_scm<9" in xarray.constraints
    assert requests.constraints == ()
    assert reg.get("someone/else", "1.0") is None


def test_registered_specs_win_and_load_from_files(tmp_path: Path) -> None:
    reg = SpecRegistry()
    mine = EnvSpec(python="3.13", test_cmd=("pytest",), source="mine")
    reg.register("psf/requests", "2.10", mine)
    assert reg.get("psf/requests", "2.10") is mine
    as_json = tmp_path / "s.json"
    as_json.write_text(json.dumps({REPO: {VERSION: SPEC}}))
    as_yaml = tmp_path / "s.yaml"
    as_yaml.write_text("o/n:\n  '2.0':\n    python: '3.9'\n    test_cmd: [make setup, make test]\n")
    reg.load_file(as_json)
    reg.load_file(as_yaml)
    spec = reg.get(REPO, VERSION)
    assert spec is not None and spec.pip_packages == ("pytest",) and spec.source == str(as_json)
    two = reg.get("o/n", "2.0")
    assert two is not None and two.test_cmd == ("make setup", "make test")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"o/n": {"1": {"python": "3.9"}}}))
    with pytest.raises(ConfigError, match="test_cmd"):
        reg.load_file(bad)


@pytest.mark.parametrize(
    ("want", "used", "suite"),
    [
        ("3.5", "3.9", "bullseye"),
        ("3.6", "3.9", "bullseye"),
        ("3.9", "3.9", "bullseye"),
        ("3.10", "3.11", "bookworm"),
        ("3.11", "3.11", "bookworm"),
        ("3.12", "3.13", "trixie"),
        ("3.14", "3.13", "trixie"),
    ],
)
def test_debian_python_substitution(want: str, used: str, suite: str) -> None:
    assert debian_python(want) == (used, suite)


def test_directives_and_parsers() -> None:
    reg = SpecRegistry()
    spec = EnvSpec.from_mapping(SPEC)
    assert directives_for(REPO, TEST_PATCH, spec) == ["tests/test_calc.py"]
    django = reg.get("django/django", "3.0")
    assert django is not None
    patch = TEST_PATCH.replace("tests/test_calc.py", "tests/admin_views/tests.py")
    assert directives_for("django/django", patch, django) == ["admin_views.tests"]
    with pytest.raises(ConfigError, match="unknown log parser"):
        reg.parser(REPO, EnvSpec(python="3.9", test_cmd=("x",), log_parser="nope"))


def test_conda_packages_become_pip_requirements() -> None:
    assert pip_requirements("numpy scipy 'pandas<2.0.0' setuptools==38.2.4") == [
        "numpy",
        "scipy",
        "pandas<2.0.0",
        "setuptools==38.2.4",
    ]
    assert conda_to_pip("numpy=1.19") == ["numpy==1.19.*"]
    assert conda_to_pip("numpy=1.19.2=py39h1") == ["numpy==1.19.2"]
    assert conda_to_pip("python=3.9") == [] and conda_to_pip("pip") == []


def test_requirement_files_from_a_checkout(tmp_path: Path) -> None:
    (tmp_path / "tests" / "requirements").mkdir(parents=True)
    (tmp_path / "tests" / "requirements" / "py3.txt").write_text(
        "-r base.txt\n# a comment\n-e .\nasgiref >= 3.2\ntypes-pkg_resources==0.1\n"
    )
    (tmp_path / "tests" / "requirements" / "base.txt").write_text("sqlparse\n")
    text = requirements_txt(tmp_path, ["tests/requirements/py3.txt"])
    lines = [line for line in text.splitlines() if line.strip()]
    # swebench's rules: includes first, comments and "-e ." dropped, yanked package renamed
    assert lines == ["sqlparse", "asgiref >= 3.2", "types-setuptools"]
    (tmp_path / "environment.yml").write_text(
        "name: x\ndependencies:\n  - python=3.10\n  - numpy>=1.20\n  - pip\n"
        "  - pip:\n      - pytest-xdist\n"
    )
    assert environment_yml_requirements(tmp_path, ["environment.yml"]).splitlines() == [
        "numpy>=1.20",
        "pytest-xdist",
    ]


def test_scm_version_like_setuptools_scm() -> None:
    assert scm_version("5.4.0-626-g678c1a074") == "5.4.1.dev626+g678c1a074"
    assert scm_version("v2.10.0-40-g36453b95") == "2.10.1.dev40+g36453b95"
    assert scm_version("v0.9-0-gabc123") == "0.9"
    assert scm_version("8.0.0.dev0-160-g10056865d") == "8.0.0.dev160+g10056865d"
    assert scm_version("8.0.0rc1-3-gabc") == "8.0.0rc2.dev3+gabc"
    assert scm_version("release-candidate-3-gabc") == ""


def test_dockerfiles() -> None:
    spec = EnvSpec(
        python="3.9",
        pip_packages=("pytest==7.4", "a b"),
        pre_install=("apt-get install -y foo",),
        install="python -m pip install -e .",
        eval_commands=("export LANG=C.UTF-8",),
        test_cmd=("pytest -rA",),
    )
    lines = env_dockerfile("sha256:base", spec, key="k1", has_reqs=True, version="1.2").splitlines()
    assert lines[0] == "FROM sha256:base" and "harness.env.key=k1" in lines[-1]
    assert "harness.base.key=''" in lines[1]  # the base's label must not be inherited
    assert "k1" not in "\n".join(lines[:-1])  # so layers are shared between env images
    assert "ENV SETUPTOOLS_SCM_PRETEND_VERSION=1.2" in lines
    assert "RUN python -m pip install pytest==7.4 'a b'" in lines
    assert lines.index("USER root", lines.index("WORKDIR /testbed")) < lines.index(
        "RUN apt-get install -y foo"
    )
    install = lines.index("RUN python -m pip install -e .")
    assert lines[install - 1] == "USER 1000:1000"  # the install runs as the sandbox user
    assert "RUN (export LANG=C.UTF-8) || true" in lines
    assert SETUP_DIFF in lines[-4] and "ls-files" in lines[-4] and lines[-5] == "USER 1000:1000"
    inst = instance_dockerfile("sha256:env", spec, key="k3", version="1.3").splitlines()
    assert inst[0] == "FROM sha256:env" and "harness.image=instance" in inst[-1]
    assert "COPY --chown=1000:1000 testbed/ /testbed/" in inst
    assert "RUN apt-get install -y foo" in inst and "RUN python -m pip install -e ." in inst
    assert not any("pip install pytest" in line for line in inst)  # those are the env's
    suite = suite_dockerfile("sha256:base", SWEBENCH_APT, "k2").splitlines()
    assert suite[0] == "FROM sha256:base" and "harness.env.key=k2" in suite[-1]
    assert any(line.startswith("RUN apt-get update") and "locales" in line for line in suite)
    bare = env_dockerfile(
        "b", EnvSpec(python="3.9", test_cmd=("t",)), key="k", has_reqs=False, version=""
    )
    assert "requirements" not in bare and "SETUPTOOLS_SCM" not in bare


def test_official_image_names() -> None:
    assert (
        official_image("django__django-11099")
        == "swebench/sweb.eval.x86_64.django_1776_django-11099:latest"
    )


def test_conda_lists_install_best_effort_and_requirement_files_strictly() -> None:
    def install_line(packages: str) -> str:
        spec = EnvSpec(python="3.9", packages=packages, test_cmd=("t",))
        text = env_dockerfile("b", spec, key="k", has_reqs=True, version="")
        return next(line for line in text.splitlines() if "pip install -r" in line)

    strict = install_line("requirements.txt")
    assert strict == "RUN python -m pip install -r /opt/harness/requirements.txt"
    for conda in ("environment.yml", "numpy=1.19 cdms2"):
        line = install_line(conda)
        assert "|| (" in line and "skipped.txt" in line  # one by one, skipping what pip lacks
    assert conda_to_pip("matplotlib-base=3.3") == ["matplotlib==3.3.*"]
