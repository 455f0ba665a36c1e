"""bubblewrap-only guarantees: a read-only host, a private /tmp, home directories hidden."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.sandboxes import SandboxSpec
from harness.sandboxes.bwrap import BwrapBackend
from tests.sandboxes.conftest import skip_unless_available


@pytest.mark.bwrap
async def test_only_the_work_tree_is_writable(cache_dir: Path, repo: Path) -> None:
    skip_unless_available("bwrap")
    async with BwrapBackend(cache_dir) as be, await be.open(SandboxSpec(repo=repo)) as box:
        res = await box.exec(
            "touch /usr/harness-probe 2>&1 || echo usr-denied; "
            "touch /etc/harness-probe 2>&1 || echo etc-denied; "
            "touch ok-here && echo work-ok; find /root /home -mindepth 1 | wc -l"
        )
        assert "usr-denied" in res.stdout and "etc-denied" in res.stdout
        assert "work-ok" in res.stdout
        assert res.stdout.strip().endswith("0")  # /root and /home are empty tmpfs
    assert not Path("/usr/harness-probe").exists()


def test_missing_bwrap_is_actionable(monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> None:
    from harness.errors import SandboxUnavailable

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SandboxUnavailable) as info:
        BwrapBackend(cache_dir)
    assert info.value.hint and "apt-get install bubblewrap" in info.value.hint
