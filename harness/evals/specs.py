"""Install and test specs per (repo, version), and the Python that Debian can provide.

The specs of public SWE-bench repositories come from the `swebench` package (4.x):
`swebench.harness.constants.MAP_REPO_VERSION_TO_SPECS` (python version, conda/pip packages,
pre-install and install commands, eval commands, test command), `MAP_REPO_TO_REQS_PATHS` and
`MAP_REPO_TO_ENV_YML_PATHS` (where requirement files live), `MAP_REPO_TO_PARSER` (log parsers)
and `get_test_directives` (which test files a test patch touches). Nothing is retyped here;
other repositories register their own spec (`SpecRegistry.register`, or a JSON/YAML file).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

# Debian suites and the CPython each ships: the only Pythons we can install without a registry.
DEBIAN_PYTHONS: dict[str, str] = {"3.9": "bullseye", "3.11": "bookworm", "3.13": "trixie"}
SWEBENCH_SOURCE = "swebench {version}: harness.constants.MAP_REPO_VERSION_TO_SPECS"
# Dependencies the swebench specs leave open resolve to today's releases, not to what
# SWE-bench's images (built in 2024) got; these are the ones that since broke a repository,
# each with why. They join the swebench spec as pip constraints (every pip run in the image).
DRIFT_CONSTRAINTS: dict[str, tuple[str, ...]] = {
    # docutils 0.22 (2025) dropped docutils.utils.roman, which sphinx's LaTeX writer imports
    # at import time of sphinx.testing: every sphinx test errors before it runs.
    "sphinx-doc/sphinx": ("docutils<0.22",),
    # xarray < 0.17 fetches setuptools_scm through setup_requires: today's needs packaging
    # >= 26.2, against the spec's packaging==23.1 pin (ResolutionImpossible at egg_info).
    "pydata/xarray": ("setuptools_scm<9",),
}
# Pins of a swebench spec that the Python we substitute cannot install (Debian has no 3.10,
# so xarray 0.12 runs on 3.11), each replaced by the nearest release that installs, with why.
SUBSTITUTED_PINS: dict[tuple[str, str], dict[str, str]] = {
    # pandas 1.5.3 on Python 3.11 requires numpy >= 1.23.2 (ResolutionImpossible with 1.23.0).
    ("pydata/xarray", "0.12"): {"numpy==1.23.0": "numpy==1.23.2"},
}
# Specs whose unpinned conda list must resolve against the spec's own pins. Installed freely
# first, it takes today's releases (zarr 3 needs numpy >= 1.25), which the pins then break
# by downgrading numpy under them ("module 'numpy' has no attribute 'dtypes'" at collection).
PINS_CONSTRAIN: frozenset[tuple[str, str]] = frozenset({("pydata/xarray", "0.12")})
Parser = Callable[[str], dict[str, str]]


@dataclass(frozen=True)
class EnvSpec:
    """How to install a repository's environment and run its tests."""

    python: str
    packages: str = ""  # conda-style list, or "requirements.txt" / "environment.yml"
    pip_packages: tuple[str, ...] = ()
    pre_install: tuple[str, ...] = ()
    install: str = ""
    eval_commands: tuple[str, ...] = ()
    test_cmd: tuple[str, ...] = ()  # the last one gets the test files appended
    log_parser: str = ""  # "pytest", "django", "sympy", ... (swebench's parse_log_<name>)
    directive_style: str = ""  # "django" turns test files into module names
    reqs_paths: tuple[str, ...] = ()
    env_yml_paths: tuple[str, ...] = ()
    # pip constraints for every pip run of the image (PIP_CONSTRAINT); see DRIFT_CONSTRAINTS
    constraints: tuple[str, ...] = ()
    source: str = ""  # where the spec came from

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "") -> EnvSpec:
        def strings(key: str) -> tuple[str, ...]:
            value = data.get(key) or ()
            return (value,) if isinstance(value, str) else tuple(str(v) for v in value)

        if "python" not in data or "test_cmd" not in data:
            raise ConfigError(f"env spec from {source or 'input'} needs `python` and `test_cmd`")
        return cls(
            python=str(data["python"]),
            packages=str(data.get("packages") or ""),
            pip_packages=strings("pip_packages"),
            pre_install=strings("pre_install"),
            install=str(data.get("install") or ""),
            eval_commands=strings("eval_commands"),
            test_cmd=strings("test_cmd"),
            log_parser=str(data.get("log_parser") or ""),
            directive_style=str(data.get("directive_style") or ""),
            reqs_paths=strings("reqs_paths"),
            env_yml_paths=strings("env_yml_paths"),
            constraints=strings("constraints"),
            source=str(data.get("source") or source),
        )

    def fingerprint(self) -> str:
        """Everything that changes the built environment (not the source label)."""
        data = asdict(self)
        for key in ("source", "log_parser", "eval_commands", "test_cmd", "directive_style"):
            data.pop(key)
        return json.dumps(data, sort_keys=True)


def debian_python(requested: str) -> tuple[str, str]:
    """(python used, Debian suite) for a requested "3.X": the same when Debian ships it,
    else the oldest shipped one that is newer, else the newest (a substitution)."""
    try:
        want = tuple(int(p) for p in requested.split(".")[:2])
    except ValueError:
        raise ConfigError(f"python version {requested!r} is not like '3.9'") from None
    shipped = sorted(DEBIAN_PYTHONS, key=lambda v: tuple(int(p) for p in v.split(".")))
    for version in shipped:
        if tuple(int(p) for p in version.split(".")) >= want:
            return version, DEBIAN_PYTHONS[version]
    return shipped[-1], DEBIAN_PYTHONS[shipped[-1]]


class SpecRegistry:
    """Spec lookup: registered specs first, then the `swebench` package's tables."""

    def __init__(self, *, use_swebench: bool = True) -> None:
        self.use_swebench = use_swebench
        self._specs: dict[tuple[str, str], EnvSpec] = {}

    def register(self, repo: str, version: str, spec: EnvSpec) -> None:
        self._specs[(repo, version)] = spec

    def load_file(self, path: Path) -> None:
        """Register every spec in a JSON or YAML file: {repo: {version: {field: value}}}."""
        try:
            text = path.read_text()
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read env specs from {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected {{repo: {{version: spec}}}}")
        for repo, versions in data.items():
            if not isinstance(versions, dict):
                raise ConfigError(f"{path}: {repo} maps to {type(versions).__name__}")
            for version, spec in versions.items():
                self.register(repo, str(version), EnvSpec.from_mapping(spec, source=str(path)))

    def get(self, repo: str, version: str) -> EnvSpec | None:
        found = self._specs.get((repo, version))
        if found is not None or not self.use_swebench:
            return found
        return swebench_spec(repo, version)

    def parser(self, repo: str, spec: EnvSpec) -> Parser:
        """The log parser for `repo`: the spec's named one, else swebench's for the repo."""
        from swebench.harness.log_parsers import MAP_REPO_TO_PARSER
        from swebench.harness.log_parsers import python as py_parsers

        if spec.log_parser:
            fn = getattr(py_parsers, f"parse_log_{spec.log_parser}", None)
            if fn is None:
                raise ConfigError(f"unknown log parser {spec.log_parser!r} for {repo}")
        else:
            fn = MAP_REPO_TO_PARSER.get(repo, py_parsers.parse_log_pytest)
        # swebench's parsers take (log, test_spec); the Python ones never read test_spec.
        return lambda log: dict(fn(log, None))


def swebench_spec(repo: str, version: str) -> EnvSpec | None:
    """The spec the `swebench` package publishes for (repo, version), if any."""
    try:
        import swebench
        from swebench.harness import constants
    except ImportError as exc:
        raise ConfigError(
            "the `swebench` package (4.x) is missing", hint="pip install 'harness[eval]'"
        ) from exc
    table = getattr(constants, "MAP_REPO_VERSION_TO_SPECS", None)
    if table is None:
        raise ConfigError(
            f"swebench {swebench.__version__} has no MAP_REPO_VERSION_TO_SPECS",
            hint="swebench 5 moved specs to per-instance task repositories; install swebench>=4,<5",
        )
    raw = table.get(repo, {}).get(version)
    if raw is None:
        return None
    data = dict(raw)
    data["reqs_paths"] = constants.MAP_REPO_TO_REQS_PATHS.get(repo, ())
    data["env_yml_paths"] = constants.MAP_REPO_TO_ENV_YML_PATHS.get(repo, ())
    if repo == "django/django":
        data["directive_style"] = "django"
    swaps = SUBSTITUTED_PINS.get((repo, version), {})
    data["pip_packages"] = [swaps.get(p, p) for p in data.get("pip_packages") or ()]
    data["constraints"] = list(DRIFT_CONSTRAINTS.get(repo, ()))
    if (repo, version) in PINS_CONSTRAIN:
        data["constraints"] += data["pip_packages"]
    install = constants.MAP_REPO_TO_INSTALL.get(repo)
    if install:  # a repo-wide step swebench runs before the per-version pre_install
        data["pre_install"] = [install, *(data.get("pre_install") or ())]
    return EnvSpec.from_mapping(data, source=SWEBENCH_SOURCE.format(version=swebench.__version__))


def directives_for(repo: str, test_patch: str, spec: EnvSpec) -> list[str]:
    """What to append to the test command: the test files the test patch touches
    (swebench's get_test_directives; Django's runner wants module names instead)."""
    from swebench.harness.test_spec.python import get_test_directives

    as_repo = "django/django" if spec.directive_style == "django" else repo
    return list(get_test_directives({"repo": as_repo, "test_patch": test_patch}))


def pip_requirements(packages: str) -> list[str]:
    """A conda-style package list as pip requirements ("numpy=1.19" -> "numpy==1.19.*")."""
    out: list[str] = []
    for item in shlex.split(packages):
        out.extend(conda_to_pip(item))
    return out


# Conda package names whose PyPI distribution is called otherwise.
CONDA_NAMES = {"matplotlib-base": "matplotlib", "pytables": "tables", "iris": "scitools-iris"}


def conda_to_pip(item: str) -> list[str]:
    item = item.strip()
    name = re.split(r"[=<>!~ ]", item, maxsplit=1)[0]
    if not item or name in ("python", "pip"):
        return []
    if name in CONDA_NAMES:
        item = CONDA_NAMES[name] + item[len(name) :]
    if "=" in item and not any(op in item for op in ("==", ">=", "<=", "!=", "~=")):
        name, _, version = item.partition("=")
        version = version.split("=")[0]  # drop a conda build string
        return [f"{name}=={version}" if version.count(".") >= 2 else f"{name}=={version}.*"]
    return [item]


@dataclass(frozen=True)
class PythonChoice:
    requested: str
    used: str
    suite: str
    notes: tuple[str, ...] = field(default=())

    @property
    def substituted(self) -> bool:
        return self.requested != self.used
