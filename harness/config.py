"""Typed configuration: frozen dataclasses, a YAML file, and `-c key.path=value` overrides.

Every knob of `harness solve` lives here with its default; unknown keys and ill-typed
values are ConfigErrors that name the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from harness.errors import ConfigError
from harness.llm.engine.load import EngineSettings

T = TypeVar("T")


@dataclass(frozen=True)
class StageConfig:
    """Limits of one agent stage (testing or editing)."""

    max_turns: int = 8  # model calls per sample in this stage
    temperature: float = 0.5
    max_tokens: int = 1024  # per model call
    exec_timeout: float = 100.0  # seconds per test run


@dataclass(frozen=True)
class ContextConfig:
    enabled: bool = True
    max_candidates: int = 80  # files the relevance model reads (benchmarks/context_recall.py)
    relevance: bool = True  # ask the model about each candidate file
    rankings: int = 1  # model rankings merged by mean rank (CodeMonkeys uses 3)
    token_budget: int = 2500  # tokens of file content packed into prompts
    max_file_tokens: int = 1500  # longer files are shown middle-truncated to the relevance model
    relevance_model: str | None = None  # a cheaper model spec for relevance; None = main model


@dataclass(frozen=True)
class SelectionConfig:
    top_k: int = 3
    max_turns: int = 10
    temperature: float = 0.0
    max_tokens: int = 1024
    exec_timeout: float = 100.0
    enabled: bool = True


@dataclass(frozen=True)
class SandboxConfig:
    backend: str = "docker"
    image: str | None = None
    network: bool = False
    memory_mb: int = 4096
    cpus: float = 2.0
    pids: int = 1024
    ca_bundle: Path | None = None
    python_path: bool = True  # put the work tree on PYTHONPATH for test scripts


@dataclass(frozen=True)
class BudgetConfig:
    max_tokens: int | None = None
    max_usd: float | None = None


@dataclass(frozen=True)
class ConcurrencyConfig:
    samples: int = 0  # trajectories in flight; 0 = all samples at once
    llm_calls: int = 8  # model calls in flight
    execs: int = 4  # voting / test runs in flight


@dataclass(frozen=True)
class SolveConfig:
    model: str = "smollm2-135m"
    base_url: str | None = None  # for openai: specs
    samples: int = 4
    seed: int = 0
    output_limit: int = 8192  # characters of command output shown to the model
    testing: StageConfig = field(default_factory=StageConfig)
    editing: StageConfig = field(default_factory=StageConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    context: ContextConfig = field(default_factory=ContextConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    concurrency: ConcurrencyConfig = field(default_factory=ConcurrencyConfig)
    engine: EngineSettings = field(default_factory=EngineSettings)  # in-process models
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # $/1M in, out


def load_config(path: Path | None = None, overrides: Iterable[str] = ()) -> SolveConfig:
    """Defaults, then the YAML file, then `key.path=value` overrides (values parsed as YAML)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"override {item!r} is not of the form key.path=value",
                hint="e.g. -c samples=8 -c editing.temperature=0.2",
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = value
    return build(SolveConfig, data, "")


def build(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    """Construct dataclass `cls` from a mapping, checking keys and value types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(
                f"unknown config key {where + key!r}",
                hint=f"valid keys{' in ' + where.rstrip('.') if where else ''}: "
                f"{', '.join(sorted(names))}",
            )
        kwargs[key] = _coerce(hints[key], value, f"{where}{key}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r} is a section; give it a mapping")
        return build(tp, value, key + ".")  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key {key!r}: {value!r} is not a valid {tp}")
    if origin in (Mapping, dict) or tp is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r} must be a mapping")
        return {str(k): tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r} must be true or false, not {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r} must be an integer, not {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config key {key!r} must be a number, not {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key {key!r} must be a string, not {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value).expanduser()
        raise ConfigError(f"config key {key!r} must be a path, not {value!r}")
    return value


def to_dict(config: Any) -> Any:
    """A YAML-ready plain view of a config (for run directories and reports)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, Mapping):
        return {k: to_dict(v) for k, v in config.items()}
    if isinstance(config, tuple):
        return [to_dict(v) for v in config]
    if isinstance(config, Path):
        return str(config)
    return config
