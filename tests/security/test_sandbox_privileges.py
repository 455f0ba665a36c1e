"""Attacks on privileges: model code holds no capability, is not root, and cannot turn a
read-only bind of a host file writable (issue 12, item 1)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.sandboxes import SandboxBackend, SandboxSpec, make_backend
from tests.conftest import make_repo
from tests.sandboxes.conftest import skip_unless_available

BACKENDS = [
    pytest.param("docker", marks=pytest.mark.docker),
    pytest.param("bwrap", marks=pytest.mark.bwrap),
]


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, cache_dir: Path) -> AsyncIterator[SandboxBackend]:
    skip_unless_available(request.param)
    async with make_backend(request.param, cache_dir) as be:
        yield be


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    make_repo(tmp_path / "repo", {"app.py": "print('hi')\n"})
    return tmp_path / "repo"


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
