"""Attacks on privileges: model code holds no capability, is not root, and cannot turn a
read-only bind of a host file writable (issue 12, item 1)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import harness
from harness.sandboxes import SandboxBackend, SandboxSpec, make_backend
from tests.conftest import make_repo
from tests.sandboxes.conftest import skip_unless_available


def status_fields(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


async def test_local_commands_are_unprivileged_too(cache_dir: Path, repo: Path) -> None:
    """No isolation, but started by root it still runs nothing as root."""
    async with make_backend("local", cache_dir) as be:
        await test_commands_are_unprivileged(be, repo)


async def test_commands_are_unprivileged(backend: SandboxBackend, repo: Path) -> None:
    async with await backend.open(SandboxSpec(repo=repo)) as box:
        res = await box.exec("id -u; id -g; cat /proc/self/status")
        uid, gid, *status = res.stdout.splitlines()
        fields = status_fields("\n".join(status))
        assert uid != "0" and gid != "0"
        assert fields["Uid"].split() == [uid] * 4  # real, effective, saved, fs
        for caps in ("CapEff", "CapPrm", "CapAmb"):
            assert int(fields[caps], 16) == 0, f"{caps} = {fields[caps]}"
        assert fields["NoNewPrivs"] == "1"  # no setuid binary or file capability helps
        # A background job started by one command is no more privileged than the command.
        res = await box.exec(
            "setsid sh -c 'grep CapEff /proc/self/status > /tmp/bg' & sleep 0.5; cat /tmp/bg"
        )
        assert int(res.stdout.split()[1], 16) == 0
        # And asking for root back fails.
        res = await box.exec(["python3", "-c", "import os; os.setuid(0)"])
        assert res.exit_code != 0 and "PermissionError" in res.stderr


async def test_read_only_host_bind_stays_read_only(
    backend: SandboxBackend, repo: Path, tmp_path: Path
) -> None:
    # Every backend binds the CA bundle read-only from the host: the attack targets it.
    bundle = tmp_path / "ca.crt"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nhost\n-----END CERTIFICATE-----\n")
    before = hashlib.sha256(bundle.read_bytes()).hexdigest()
    async with await backend.open(SandboxSpec(repo=repo, ca_bundle=bundle)) as box:
        path = (await box.exec("printenv SSL_CERT_FILE")).stdout.strip()
        assert path, "the CA bundle is bound into the sandbox"
        attack = (
            f"mount -o remount,rw,bind {path} 2>&1; mount -o remount,rw {path} 2>&1; "
            f"echo pwned >> {path} 2>&1; "
            # A user namespace of its own gives capabilities there, not over this mount.
            f"unshare -Urm sh -c 'mount -o remount,rw,bind {path}; echo pwned >> {path}' 2>&1; "
            "true"
        )
        res = await box.exec(attack)
        assert "pwned" not in (await box.exec(["cat", path])).stdout, res.output
    assert hashlib.sha256(bundle.read_bytes()).hexdigest() == before


# Run by an unprivileged user (below): opens a bwrap sandbox, attacks it, prints what it saw.
AS_A_USER = """
import asyncio, json, sys
from pathlib import Path
from harness.sandboxes import SandboxSpec, make_backend

TRY_ROOT = "import os\\ntry: os.setuid(0)\\nexcept OSError: print('refused')\\nelse: print('root')"

async def main(cache, repo, bundle):
    async with make_backend("bwrap", Path(cache)) as be:
        spec = SandboxSpec(repo=Path(repo), ca_bundle=Path(bundle))
        async with await be.open(spec) as box:
            path = (await box.exec("printenv SSL_CERT_FILE")).stdout.strip()
            seen = {
                "path": path,
                "status": (await box.exec("cat /proc/self/status")).stdout,
                "setuid": (await box.exec(["python3", "-c", TRY_ROOT])).stdout,
                "attack": (await box.exec(
                    f"mount -o remount,rw,bind {path} 2>&1; echo pwned >> {path} 2>&1; "
                    f"unshare -Urm sh -c 'mount -o remount,rw,bind {path}; echo pwned >> {path}'"
                    " 2>&1; true"
                )).output,
                "bundle": (await box.exec(["cat", path])).stdout,
            }
    print(json.dumps(seen))

asyncio.run(main(*sys.argv[1:]))
"""
NOBODY = 65534


def _as_nobody(*argv: str) -> list[str]:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]


def _interpreter_for_nobody() -> str | None:
    """A Python >= 3.10 the unprivileged user can run (a venv under /root is not one)."""
    for candidate in (sys.executable, shutil.which("python3", path=os.defpath) or ""):
        if not candidate:
            continue
        probe = "import sys; assert sys.version_info >= (3, 10)"
        ok = subprocess.run(_as_nobody(candidate, "-c", probe), capture_output=True, check=False)
        if ok.returncode == 0:
            return candidate
    return None


@pytest.mark.bwrap
def test_bwrap_started_by_a_user_is_unprivileged(tmp_path: Path) -> None:
    """The same attacks with harness started by a user, not root: commands run in a user
    namespace, hold no capability, and cannot make a read-only bind writable."""
    skip_unless_available("bwrap")
    if os.geteuid() != 0:
        pytest.skip("the suite runs as a user: every bwrap test above already starts it as one")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to start harness as another user")
    python = _interpreter_for_nobody()
    if python is None:
        pytest.skip("no Python >= 3.10 that an unprivileged user may run")
    # A world-readable copy of the package (sandboxes need only the standard library) and a
    # repository, cache and CA bundle owned by the user, outside root's private directories.
    root = Path(tempfile.mkdtemp(prefix="harness-as-user-"))
    try:
        root.chmod(0o755)
        shutil.copytree(
            Path(harness.__file__).parent,
            root / "pkg" / "harness",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        make_repo(root / "repo", {"app.py": "print('hi')\n"})
        (root / "cache").mkdir()
        bundle = root / "ca.crt"
        bundle.write_text("-----BEGIN CERTIFICATE-----\nhost\n-----END CERTIFICATE-----\n")
        (root / "probe.py").write_text(AS_A_USER)
        for path in (root / "repo", root / "cache", bundle):
            subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(path)], check=True)
        bundle.chmod(0o444)
        env = {"PATH": os.defpath, "HOME": str(root), "PYTHONPATH": str(root / "pkg")}
        out = subprocess.run(
            _as_nobody(
                python, str(root / "probe.py"), str(root / "cache"), str(root / "repo"), str(bundle)
            ),
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        seen = json.loads(out.stdout.splitlines()[-1])
        fields = status_fields(seen["status"])
        assert fields["Uid"].split() != ["0"] * 4
        for caps in ("CapEff", "CapPrm", "CapAmb"):
            assert int(fields[caps], 16) == 0, f"{caps} = {fields[caps]}"
        assert fields["NoNewPrivs"] == "1"
        assert seen["setuid"].strip() == "refused"  # uid 0 is not even mapped
        assert seen["path"], "the CA bundle is bound into the sandbox"
        assert "pwned" not in seen["bundle"], seen["attack"]
        assert "pwned" not in bundle.read_text()
    finally:
        shutil.rmtree(root, ignore_errors=True)
