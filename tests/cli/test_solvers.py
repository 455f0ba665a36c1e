"""The one solver loader (`--solver` of eval run and bot github): one signature, the old ones
loaded with a warning for one release, bad specs refused as input errors."""

from __future__ import annotations

import functools
import pickle

import pytest

from harness.bot import SolveOptions
from harness.cli.options import PipelineFlags
from harness.cli.solvers import load_solver, pipeline_factory
from harness.config import load
from harness.errors import ConfigError

CONFIG = load(None, flags=PipelineFlags(samples=3, model="openai:gpt-4o", max_usd=2.0).keys()).solve


def test_a_factory_gets_the_runs_config_and_no_warning(capsys: pytest.CaptureFixture[str]) -> None:
    solver = load_solver("tests.cli.solvers:recording")(CONFIG)
    assert solver.config == CONFIG  # type: ignore[attr-defined]
    assert "warning" not in capsys.readouterr().err


def test_old_signatures_still_load_with_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    solver = load_solver("tests.cli.solvers:zero_argument")(CONFIG)
    assert solver.config is None and solver.options is None  # type: ignore[attr-defined]
    assert "takes no arguments is deprecated" in capsys.readouterr().err
    solver = load_solver("tests.cli.solvers:from_options")(CONFIG)
    assert solver.options == SolveOptions(3, "openai:gpt-4o", 2.0)  # type: ignore[attr-defined]
    assert "takes SolveOptions is deprecated" in capsys.readouterr().err


def test_factories_pickle_for_ray() -> None:
    """A worker gets `partial(factory, config)`: it must survive pickling, old forms too."""
    for spec in ("tests.cli.solvers:recording", "tests.cli.solvers:zero_argument"):
        job = functools.partial(load_solver(spec), CONFIG)
        assert pickle.loads(pickle.dumps(job))().solve  # type: ignore[attr-defined]
    assert pickle.loads(pickle.dumps(functools.partial(pipeline_factory(), CONFIG)))


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_colon", "is not module:callable"),
        (":f", "is not module:callable"),
        ("no.such.module:f", "cannot import it"),
        ("tests.cli.solvers:missing", "cannot import it"),
        ("tests.cli.solvers:NOT_CALLABLE", "is not callable"),
    ],
)
def test_bad_specs_are_input_errors(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_solver(spec)
    assert info.value.hint and "SolveConfig" in info.value.hint
