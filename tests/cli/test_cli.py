"""What every command shares: conventional --help, malformed command lines as one line and a
hint, old option names that still work with a warning, the environment as a config layer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ISSUE = str(ROOT / "examples" / "durations.issue.md")


def harness(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=ROOT,
        env={**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


COMMANDS = ["", "solve", "eval run", "eval grade", "serve", "bot github", "sandbox exec"]


@pytest.mark.parametrize("command", [c.split() for c in [*COMMANDS, "model fetch"]], ids=str)
def test_help_shows_conventional_placeholders(tmp_path: Path, command: list[str]) -> None:
    """No `<bool>` after a flag, no `<str>` after every option (Typer's own labels)."""
    done = harness(tmp_path, *command, "--help")
    assert done.returncode == 0, done.stderr
    assert not re.search(r"<(bool|str|int|float|path|list)", done.stdout), done.stdout
    help_line = next(line for line in done.stdout.splitlines() if "--help" in line)
    assert re.search(r"--help\s+Show this message", help_line), help_line


def test_help_names_what_options_take(tmp_path: Path) -> None:
    lines = harness(tmp_path, "solve", "--help").stdout.splitlines()

    def line(option: str) -> str:
        return next(text for text in lines if f"{option} " in text)

    assert re.search(r"--json\s+Print a JSON summary", line("--json"))  # a flag: no placeholder
    assert re.search(r"--samples\s+-n\s+N\s", line("--samples"))
    assert re.search(r"--repo\s+-r\s+TEXT\s", line("--repo"))
    assert re.search(r"--config\s+FILE\s", line("--config"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["nosuch"], "No such command 'nosuch'"),
        (["solve", "--nosuch"], "No such option: --nosuch"),
        (["serve", "--port", "eighty"], "Invalid value for '--port'"),
        (["eval", "grade", "--workers", "x"], "Invalid value for '--workers'"),
        (["eval", "run", "--workers"], "Option '--workers' requires an argument"),
    ],
)
def test_malformed_command_lines_are_one_line_and_a_hint(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = harness(tmp_path, *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and message in lines[0], lines
    # The hint names the command the line was for, also when click fails before its context.
    where = " ".join(a for a in args[:2] if not a.startswith("-") and a != "nosuch")
    assert lines[1] == f"hint: see `{' '.join(['harness', where]).strip()} --help`", lines


def _dataset(tmp_path: Path) -> Path:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"instance_id": "a__b-1", "repo": "a/b"}]))
    return path


def test_old_eval_names_still_work_with_a_warning(tmp_path: Path) -> None:
    # A bad --slice stops the command after the options are read and before any work.
    common = ["eval", "grade", "--gold", "--dataset", str(_dataset(tmp_path)), "--slice", "x:y"]
    done = harness(tmp_path, *common, "--timeout", "5", "--memory-mb", "512")
    assert done.returncode == 2 and "--slice" in done.stderr
    assert "warning: --timeout is deprecated and goes in the next release; use --test-timeout" in (
        done.stderr
    )
    assert "use --test-memory-mb" in done.stderr
    done = harness(tmp_path, *common, "--timeout", "5", "--test-timeout", "6")
    assert done.returncode == 2
    assert "--timeout and --test-timeout are the same option, given different values" in (
        done.stderr
    )
    done = harness(tmp_path, *common, "--out", str(tmp_path / "o"), "--resume")
    assert done.returncode == 2 and "use --resume DIR" in done.stderr


def test_the_local_backend_warns_wherever_it_is_chosen(tmp_path: Path) -> None:
    done = harness(
        tmp_path, "solve", ISSUE, "--repo", str(tmp_path / "nowhere"), "--backend", "local"
    )
    assert done.returncode == 2
    assert "warning: the local backend runs commands on this machine without any isolation" in (
        done.stderr
    )
    done = harness(
        tmp_path, "eval", "run", "--dataset", str(_dataset(tmp_path)), "--out", str(tmp_path / "o"),
        "--backend", "local", "--slice", "x:y",
    )  # fmt: skip
    assert done.returncode == 2 and "warning: the local backend runs commands" in done.stderr


def test_the_environment_is_the_layer_under_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.cli.common import load_config

    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("HARNESS_GIT_MIRROR", "/srv/git/{owner}+{name}")
    monkeypatch.setenv("HARNESS_CA_BUNDLE", "")  # empty: unset
    config = load_config(None, [])
    assert config.solve.base_url == "http://127.0.0.1:9/v1"
    assert config.eval.git_mirror == "/srv/git/{owner}+{name}" and config.eval.ca_bundle is None
    path = tmp_path / "c.yaml"
    path.write_text("base_url: http://file/v1\n")
    assert load_config(path, []).solve.base_url == "http://file/v1"
    assert load_config(path, [], {"base_url": "http://flag/v1"}).solve.base_url == "http://flag/v1"
    # A resumed run keeps the base URL it ran with.
    run = load_config(None, ["base_url=http://run/v1"]).solve
    assert load_config(None, [], base=run).solve.base_url == "http://run/v1"


def test_one_github_url_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.cli.common import github_urls

    for name in ("GITHUB_SERVER_URL", "GITHUB_API_URL"):
        monkeypatch.delenv(name, raising=False)
    assert github_urls() == ("https://github.com", "https://api.github.com")
    assert github_urls("https://ghe.corp") == ("https://ghe.corp", "https://ghe.corp/api/v3")
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://ghe.corp/")
    assert github_urls() == ("https://ghe.corp", "https://ghe.corp/api/v3")
    monkeypatch.setenv("GITHUB_API_URL", "http://127.0.0.1:8/api")
    assert github_urls() == ("https://ghe.corp", "http://127.0.0.1:8/api")


def test_one_ca_bundle_lookup(tmp_path: Path) -> None:
    from harness.cli.common import HOST_CA, ca_bundle

    mine = tmp_path / "ca.pem"
    assert ca_bundle(mine) == mine
    assert ca_bundle(None) == (HOST_CA if HOST_CA.is_file() else None)


def test_the_embedded_model_says_what_it_is_for(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli.solve import _print_result, embedded_model_note
    from harness.types import SolveResult

    assert embedded_model_note("smollm2-135m")
    note = " ".join(capsys.readouterr().err.split())
    assert "embedded smollm2-135m" in note and "rarely fixes a real bug" in note
    assert "-m openai:" in note and "-m hf:" in note
    assert not embedded_model_note("openai:gpt-4o") and not embedded_model_note("hf:org/model")
    assert capsys.readouterr().err == ""

    result = SolveResult("t", "no_patch", "", Path("runs/t"), message="no candidate")
    _print_result(result, embedded_model=True)
    shown = " ".join(capsys.readouterr().out.split())
    assert "no patch" in shown and "-m openai:" in shown and "-m hf:" in shown
    _print_result(result, embedded_model=False)
    assert "-m openai:" not in capsys.readouterr().out


def test_an_unpriced_api_model_costs_unknown_not_zero(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    from harness.cli.live import LiveView
    from harness.cli.solve import _print_result, _summary
    from harness.types import SolveResult

    result = SolveResult(
        "t", "no_patch", "", Path("runs/t"), tokens=1200, unpriced=("gpt-mystery",)
    )
    _print_result(result)
    shown = " ".join(capsys.readouterr().out.split())
    assert "unknown (no price for gpt-mystery)" in shown and "$0.0000" not in shown
    assert _summary(result)["cost_usd"] is None
    assert _summary(result)["unpriced"] == ["gpt-mystery"]
    priced = SolveResult("t", "no_patch", "", Path("runs/t"), cost_usd=0.25)
    _print_result(priced)
    assert "$0.2500" in capsys.readouterr().out and _summary(priced)["cost_usd"] == 0.25

    console = Console(record=True, width=200)
    console.print(LiveView(2, lambda: (1200, 0.0), unpriced=("gpt-mystery",)))
    footer = console.export_text()
    assert "unknown (no price for gpt-mystery)" in footer and "$0.0000" not in footer
    console.print(LiveView(2, lambda: (1200, 0.5)))
    assert "$0.5000" in console.export_text()
