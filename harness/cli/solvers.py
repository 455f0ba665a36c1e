"""The one solver loader of `eval run` and `bot github`: `--solver module:factory`, where a
factory takes the run's SolveConfig and returns a Solver; without --solver, the pipeline.

Factories must pickle (module-level callables, or `functools.partial` of one) because Ray
sends them to other nodes.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
from collections.abc import Callable
from typing import Any

from harness.config import SolveConfig
from harness.errors import ConfigError
from harness.types import Solver

SolverFactory = Callable[[SolveConfig], Solver]
HINT = "--solver package.module:factory, a callable taking the SolveConfig and returning a Solver"


def solver_factory(spec: str | None) -> SolverFactory:
    """The factory `--solver` names, else the harness pipeline's."""
    return load_solver(spec) if spec else pipeline_factory()


def pipeline_factory() -> SolverFactory:
    """The harness pipeline as a factory: the cache, the model store and the API key are
    this process's (taken now, so a Ray worker gets the driver's)."""
    from harness.cli.common import cache_dir
    from harness.cli.model import store_from_env
    from harness.solver import make_pipeline_solver

    return functools.partial(
        make_pipeline_solver,
        cache_dir=cache_dir(),
        models_dir=store_from_env().root,
        api_key=os.environ.get("OPENAI_API_KEY"),
    )


def describe(spec: str | None, config: SolveConfig) -> str:
    """What solves, for run records and messages."""
    if spec:
        return spec
    return f"harness pipeline ({config.model}, {config.samples} samples)"


def check_spec(spec: str) -> tuple[str, str]:
    """(module, attribute) of 'package.module:callable', without importing anything."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ConfigError(f"--solver {spec!r} is not module:callable", hint=f"pass {HINT}")
    return module, attr


def load_solver(spec: str) -> SolverFactory:
    """'package.module:callable' -> a factory of the one signature (SolveConfig -> Solver).

    Factories of the old signatures still load, with a warning, for one release: a
    zero-argument one (eval's) and one taking the bot's SolveOptions.
    """
    module, attr = check_spec(spec)
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"--solver {spec!r}: cannot import it ({exc})", hint=f"pass {HINT}"
        ) from exc
    if not callable(factory):
        raise ConfigError(f"--solver {spec!r} is not callable", hint=f"pass {HINT}")
    old = _old_signature(factory)
    if old is None:
        return factory  # type: ignore[no-any-return]
    from harness.cli.options import warn

    warn(
        f"--solver {spec}: a factory that takes {old} is deprecated and goes in the next "
        "release; take the SolveConfig instead"
    )
    return ZeroArgument(factory) if old == "no arguments" else FromOptions(factory)


def _old_signature(factory: Callable[..., Any]) -> str | None:
    """What an old-style factory takes ("no arguments", "SolveOptions"), None for the new one."""
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # no signature to read: assume the new form
        return None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if positional:
        annotation = positional[0].annotation
        name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        name = name.rpartition(".")[2]
        if name == "SolveConfig":
            return None
        if name == "SolveOptions":
            return "SolveOptions"
    required = [p for p in positional if p.default is p.empty]
    if not required and not any(p.kind == p.VAR_POSITIONAL for p in params):
        return "no arguments"
    return None


class ZeroArgument:
    """An old zero-argument factory behind the new signature (picklable when it is)."""

    def __init__(self, factory: Callable[[], Solver]) -> None:
        self.factory = factory

    def __call__(self, config: SolveConfig) -> Solver:
        return self.factory()


class FromOptions:
    """An old factory of the bot's SolveOptions behind the new signature."""

    def __init__(self, factory: Callable[[Any], Solver]) -> None:
        self.factory = factory

    def __call__(self, config: SolveConfig) -> Solver:
        from harness.bot.events import SolveOptions

        options = SolveOptions(config.samples, config.model, config.budget.max_usd)
        return self.factory(options)
