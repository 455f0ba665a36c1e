"""The Dockerfiles of the three image layers (pure functions, tested without Docker).

suite     Debian base of a suite + the apt packages swebench's base image has
env       + a Python prefix, the spec's packages, the repo installed at its environment setup commit
          (per repo and version; shared by its instances)
instance  + pre_install and install again at the instance's base commit (its dependencies
          and entry points, as swebench's instance images do)

The env and instance layers end the same way: what the install steps changed in tracked
files is saved as a diff, then the tracked files and .git are removed, so the checkout the
docker backend lays over /testbed replaces them while build outputs stay.
"""

from __future__ import annotations

import re
import shlex

from harness.evals.specs import EnvSpec
from harness.sandboxes.docker import LABEL, LABEL_IMAGE, SANDBOX_USER
from harness.sandboxes.images import LABEL_KEY

LABEL_ENV_KEY = "harness.env.key"
# What swebench's base image installs besides Python and conda (swebench 4.x,
# harness/dockerfiles/python.py, _DOCKERFILE_BASE_PY): compilers for C extensions, locales;
# and python3-dev, since conda's Python carries its C headers and Debian's does not (without
# them every C extension fails: astropy, old numpy and cython built from source).
SWEBENCH_APT = (
    "python3-dev",
    "build-essential",
    "libffi-dev",
    "libtiff-dev",
    "locales",
    "locales-all",
    "tzdata",
    "curl",
    "wget",
    "jq",
)
# The environment's Python is a prefix of its own, as SWE-bench's conda env is, not a venv:
# Debian's interpreter copied into ENV_PREFIX/bin with the standard library linked beside it,
# so Python finds the prefix from the binary itself, through any symlink. A venv is found
# from the path it was started by, and tools that link the interpreter elsewhere (tox
# --current-env, sphinx's test command) ran Debian's bare Python without the environment's
# packages. Debian's layout for a prefix: pip installs into local/lib/pythonX.Y/dist-packages
# and local/bin, the directories Debian's site.py adds for every prefix. setuptools' own
# scheme (`setup.py develop`, pip's legacy editable mode: sphinx < 4.x, old sympy) writes
# its .pth to lib/pythonX.Y/site-packages, which site.py leaves out: that name is a link to
# the one package directory, so either scheme lands where Python looks.
ENV_PREFIX = "/opt/env"
ENV_BIN = f"{ENV_PREFIX}/local/bin:{ENV_PREFIX}/bin"
_MAKE_PREFIX = (
    "v=$(python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])')"
    f" && mkdir -p {ENV_PREFIX}/bin {ENV_PREFIX}/include {ENV_PREFIX}/lib/python$v"
    f" && cp /usr/bin/python$v {ENV_PREFIX}/bin/ && ln -s python$v {ENV_PREFIX}/bin/python3"
    f" && ln -s python3 {ENV_PREFIX}/bin/python"
    " && for f in /usr/lib/python$v/*; do case ${f##*/} in"
    # Debian's own package dirs stay out; EXTERNALLY-MANAGED would make pip refuse.
    " dist-packages|site-packages|EXTERNALLY-MANAGED) ;;"
    f' *) ln -s "$f" {ENV_PREFIX}/lib/python$v/ ;; esac; done'
    f" && ln -s /usr/include/python$v {ENV_PREFIX}/include/"
    f" && mkdir -p {ENV_PREFIX}/local/lib/python$v/dist-packages"
    f" && ln -s ../../local/lib/python$v/dist-packages {ENV_PREFIX}/lib/python$v/site-packages"
    # pip for the prefix, installed by a throwaway venv's pip (Debian's own is unbundled).
    " && /usr/bin/python3 -m venv /tmp/boot"
    " && /tmp/boot/bin/python -m pip install -q --no-cache-dir 'pip>=23,<24.1'"
    f" && /tmp/boot/bin/python -m pip --python {ENV_PREFIX}/bin/python install --no-cache-dir"
)
USER = SANDBOX_USER  # pip and the install step run as the user sandboxes run as
SETUP_DIFF = "/opt/harness/setup.diff"
REQS = "/opt/harness/requirements.txt"
SKIPPED = "/opt/harness/skipped.txt"  # conda packages pip could not install
CONSTRAINTS = "/opt/harness/constraints.txt"
# Editable installs expose the source tree on sys.path, as `setup.py develop` (SWE-bench's
# mode) does: setuptools >= 64 builds PEP 660 editables, and for a flat layout its default
# is an import hook that leaves the tree off sys.path, so code that maps files to modules
# through sys.path (pylint's checker loader) breaks. setuptools reads this file
# (DIST_EXTRA_CONFIG) for its own builds only; other backends and old setuptools ignore it.
EDITABLE_CFG = "/opt/harness/editable.cfg"
EDITABLE_MODE = r"[editable_wheel]\nmode = compat\n"  # printf format
# What a fresh conda env (swebench's) carries besides Python, at versions of its time;
# specs that need other pins install them afterwards.
BOOTSTRAP = ("'pip>=23,<24.1'", "'setuptools>=65,<70'", "wheel")
# First and constant (layers stay shared between images): intermediate images of a build
# must not pass for the base image they start from, whose labels they would inherit.
NEUTRAL_LABEL = f"LABEL {LABEL}=1 {LABEL_IMAGE}=env-layer {LABEL_KEY}=''"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.") or "x"


def scm_version(describe: str) -> str:
    """What setuptools_scm would call a commit, from `git describe --tags --long`
    ("5.4.0-626-gabc" -> "5.4.1.dev626+gabc", "8.0.0.dev0-160-gabc" -> "8.0.0.dev160+gabc",
    "8.0.0rc1-3-gabc" -> "8.0.0rc2.dev3+gabc"); "" when the tag is not a version."""
    m = re.fullmatch(
        r"v?(\d+(?:\.\d+)*)(?:(a|b|rc|\.dev)(\d+))?-(\d+)-g([0-9a-f]+)", describe.strip()
    )
    if not m:
        return ""
    release, pre, pre_n, distance, sha = m.groups()
    if int(distance) == 0:
        return f"{release}{pre or ''}{pre_n or ''}"
    if pre == ".dev":
        return f"{release}.dev{distance}+g{sha}"
    if pre:
        return f"{release}{pre}{int(pre_n) + 1}.dev{distance}+g{sha}"
    parts = release.split(".")
    parts[-1] = str(int(parts[-1]) + 1)
    return f"{'.'.join(parts)}.dev{distance}+g{sha}"


def suite_dockerfile(base: str, apt_packages: tuple[str, ...], key: str) -> str:
    lines = [
        f"FROM {base}",
        NEUTRAL_LABEL,
        "ENV DEBIAN_FRONTEND=noninteractive",
        "USER root",
        "RUN apt-get update && apt-get install -y --no-install-recommends "
        f"{' '.join(apt_packages)} && rm -rf /var/lib/apt/lists/*",
        f"LABEL {LABEL_IMAGE}=suite {LABEL_ENV_KEY}={key}",
    ]
    return "\n".join(lines) + "\n"


def _install(spec: EnvSpec, version: str) -> list[str]:
    """The repo's own steps, on the checkout copied into /testbed."""
    lines = [f"COPY --chown={USER} testbed/ /testbed/", "WORKDIR /testbed"]
    if version:  # repositories versioned by setuptools_scm need it without full history
        lines.append(f"ENV SETUPTOOLS_SCM_PRETEND_VERSION={version}")
    if spec.pre_install:  # apt-get and friends: as root, like swebench
        lines += ["USER root", *(f"RUN {cmd}" for cmd in spec.pre_install), f"USER {USER}"]
    if spec.install:
        lines.append(f"RUN {spec.install}")
    return lines


def _finish(kind: str, key: str) -> list[str]:
    # git runs as the owner of /testbed: bullseye's git 2.30 ignores `-c safe.directory`.
    return [
        f"USER {USER}",
        f"RUN git diff --binary > {SETUP_DIFF}"
        " && (git ls-files -z | xargs -0 rm -f || true) && rm -rf .git",
        "USER root",
        f"RUN find /testbed /opt/harness {ENV_PREFIX} ! -user 1000 -exec chown -h {USER} {{}} +",
        f"LABEL {LABEL_IMAGE}={kind} {LABEL_ENV_KEY}={key}",
    ]


def env_dockerfile(base: str, spec: EnvSpec, *, key: str, has_reqs: bool, version: str) -> str:
    lines = [
        f"FROM {base}",
        NEUTRAL_LABEL,
        'SHELL ["/bin/bash", "-c"]',
        "USER root",
        "ENV DEBIAN_FRONTEND=noninteractive",
        # pip runs as the sandbox user, so the prefix is its own (grading re-runs the install
        # step as that user) without a chown that would copy every file into a new layer.
        f"RUN cd / && rm -rf /testbed && mkdir -p /testbed /opt/harness && {_MAKE_PREFIX}"
        f" {' '.join(BOOTSTRAP)} && rm -rf /tmp/boot"
        f" && printf '{EDITABLE_MODE}' > {EDITABLE_CFG}"
        f" && chown -R {USER} /testbed /opt/harness {ENV_PREFIX}",
        f"ENV PATH={ENV_BIN}:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1"
        f" PIP_NO_CACHE_DIR=1 DIST_EXTRA_CONFIG={EDITABLE_CFG}",
        f"USER {USER}",
    ]
    if spec.constraints:
        pins = " ".join(shlex.quote(c) for c in spec.constraints)
        lines += [f"RUN printf '%s\\n' {pins} > {CONSTRAINTS}", f"ENV PIP_CONSTRAINT={CONSTRAINTS}"]
    if has_reqs:
        lines.append(f"COPY --chown={USER} harness-requirements.txt {REQS}")
        if spec.packages == "requirements.txt":
            lines.append(f"RUN python -m pip install -r {REQS}")
        else:
            # Conda packages installed with pip: some exist only on conda (cdms2, pynio, C
            # libraries). When the whole list does not resolve, each package is tried alone
            # and the ones pip lacks are listed in skipped.txt (and the build log).
            lines.append(
                f"RUN python -m pip install -r {REQS} || (grep -v '^[[:space:]]*$' {REQS}"
                ' | while read -r req; do python -m pip install "$req"'
                f" || echo \"$req\" >> {SKIPPED}; done; echo 'not on PyPI, skipped:';"
                f" cat {SKIPPED} 2>/dev/null || true)"
            )
    if spec.pip_packages:
        pkgs = " ".join(shlex.quote(p) for p in spec.pip_packages)
        lines.append(f"RUN python -m pip install {pkgs}")
    lines += _install(spec, version)
    # Root-only steps of the eval commands (Django's locale-gen) happen here once; grading
    # runs them again as the sandbox user, where only the exports take effect.
    lines += ["USER root", *(f"RUN ({cmd}) || true" for cmd in spec.eval_commands)]
    return "\n".join(lines + _finish("env", key)) + "\n"


def instance_dockerfile(env: str, spec: EnvSpec, *, key: str, version: str) -> str:
    lines = [f"FROM {env}", NEUTRAL_LABEL, 'SHELL ["/bin/bash", "-c"]', f"USER {USER}"]
    lines += _install(spec, version)
    return "\n".join(lines + _finish("instance", key)) + "\n"
