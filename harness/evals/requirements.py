"""Requirement files of a repository at its environment setup commit, read from a checkout.

swebench downloads these from raw.githubusercontent.com; we read the same paths
(`MAP_REPO_TO_REQS_PATHS`, `MAP_REPO_TO_ENV_YML_PATHS`) from the local checkout, so offline
machines and mirrors work, and apply swebench's own clean-up of yanked packages.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import ImageError
from harness.evals.specs import conda_to_pip

EXCLUDED_PREFIXES = ("-e .", "#", ".[test")  # the same lines swebench drops


def requirements_txt(checkout: Path, paths: Sequence[str]) -> str:
    """The first of `paths` that exists, with `-r` includes inlined (swebench's rules)."""
    for rel in paths:
        path = checkout / rel
        if path.is_file():
            break
    else:
        raise ImageError(f"none of the requirement files {', '.join(paths)} exists in the repo")
    original: list[str] = []
    included: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        if line.strip().startswith("-r"):
            inner = path.parent / line.strip()[2:].strip()
            if inner.is_file():
                included.extend(
                    x
                    for x in inner.read_text(errors="replace").splitlines()
                    if not x.strip().startswith(EXCLUDED_PREFIXES)
                )
        elif not line.strip().startswith(EXCLUDED_PREFIXES):
            original.append(line)
    text = "\n".join([*included, "\n".join(original)])
    return _clean(text)


def _clean(text: str) -> str:
    try:
        from swebench.harness.test_spec.python import clean_requirements
    except ImportError:  # older swebench: nothing to clean
        return text
    return str(clean_requirements(text))


def environment_yml_requirements(checkout: Path, paths: Sequence[str]) -> str:
    """A conda environment.yml as pip requirements: conda pins become pip pins, the `pip:`
    section is kept; non-Python conda packages that pip lacks will fail the build (and say so)."""
    import yaml

    for rel in paths:
        path = checkout / rel
        if path.is_file():
            break
    else:
        raise ImageError(f"none of {', '.join(paths)} exists in the repo")
    try:
        data: Any = yaml.safe_load(path.read_text(errors="replace"))
    except yaml.YAMLError as exc:
        raise ImageError(f"{path.name} does not parse: {exc}") from exc
    out: list[str] = []
    for dep in (data or {}).get("dependencies") or ():
        if isinstance(dep, str):
            out.extend(conda_to_pip(dep))
        elif isinstance(dep, dict):
            out.extend(str(p) for p in dep.get("pip") or ())
    return "\n".join(out)
