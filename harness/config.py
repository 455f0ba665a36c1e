"""Typed configuration: frozen dataclasses, a YAML file, and `-c key.path=value` overrides.

Every knob of `harness solve` lives here with its default; unknown keys, ill-typed values and
values out of range are ConfigErrors that name the key and the valid choices, raised when the
config loads (before any work starts or any directory is made).
"""

from __future__ import annotations

import dataclasses
import math
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


@dataclass(frozen=True)
class Range:
    """The values a numeric or string key may take."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # `low` itself is not allowed
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        if self.low is not None and self.high is not None:
            return f"between {_num(self.low)} and {_num(self.high)}"
        if self.low is not None:
            return f"{'greater than' if self.low_open else 'at least'} {_num(self.low)}"
        return f"at most {_num(self.high)}"

    def allows(self, value: Any) -> bool:
        if self.choices:
            return value in self.choices
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high


def _num(value: float | None) -> str:
    return str(int(value)) if value is not None and float(value).is_integer() else str(value)


_AT_LEAST_1 = Range(1)
_POSITIVE = Range(0, low_open=True)
_NON_NEGATIVE = Range(0)
_TEMPERATURE = Range(0, 2)
# Dotted key -> allowed values (None is always allowed where the type is optional).
RANGES: dict[str, Range] = {
    "samples": _AT_LEAST_1,
    "seed": Range(0, 2**31 - 1),
    "output_limit": _AT_LEAST_1,
    **{
        f"{stage}.{key}": rng
        for stage in ("testing", "editing", "selection")
        for key, rng in (
            ("max_turns", _AT_LEAST_1),
            ("temperature", _TEMPERATURE),
            ("max_tokens", _AT_LEAST_1),
            ("exec_timeout", _POSITIVE),
        )
    },
    "selection.top_k": _AT_LEAST_1,
    "context.max_candidates": _NON_NEGATIVE,
    "context.rankings": _AT_LEAST_1,
    "context.token_budget": _NON_NEGATIVE,
    "context.max_file_tokens": _AT_LEAST_1,
    "sandbox.backend": Range(choices=("docker", "bwrap", "local")),
    "sandbox.memory_mb": Range(64),
    "sandbox.cpus": _POSITIVE,
    "sandbox.pids": Range(16),
    "budget.max_tokens": _AT_LEAST_1,
    "budget.max_usd": _POSITIVE,
    "concurrency.samples": _NON_NEGATIVE,
    "concurrency.llm_calls": _AT_LEAST_1,
    "concurrency.execs": _AT_LEAST_1,
    "engine.policy": Range(choices=("none", "lru", "ttl")),
    "engine.kv_memory_gb": _POSITIVE,
    "engine.cpu_offload_gb": _NON_NEGATIVE,
    "engine.block_size": _AT_LEAST_1,
    "engine.max_num_seqs": _AT_LEAST_1,
    "engine.max_batched_tokens": _AT_LEAST_1,
    "engine.cost_ratio": _POSITIVE,
}
# Keys that a `harness solve` option sets, named in messages next to the key.
FLAGS: dict[str, str] = {
    "samples": "-n/--samples",
    "model": "-m/--model",
    "base_url": "--base-url",
    "sandbox.backend": "--backend",
    "budget.max_tokens": "--max-tokens",
    "budget.max_usd": "--max-usd",
}


def key_name(key: str) -> str:
    """`samples (-n/--samples)`: the config key and the option that sets it."""
    return f"{key} ({FLAGS[key]})" if key in FLAGS else key


def load_config(path: Path | None = None, overrides: Iterable[str] = ()) -> SolveConfig:
    """Defaults, then the YAML file, then `key.path=value` overrides (values parsed as YAML)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(
                f"cannot read config file {path}: {exc.strerror}",
                hint="pass an existing YAML file to --config",
            ) from exc
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"config file {path} is not valid YAML: {' '.join(str(exc).split())}",
                hint="fix the YAML at the place named (examples/smollm2-quick.yaml is a sample)",
            ) from exc
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"config file {path} must hold a mapping at the top level",
                hint="write `key: value` lines, e.g. `samples: 8`",
            )
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
                raise ConfigError(f"override {item!r}: {part} is not a section", hint=_hint(part))
        node[parts[-1]] = value
    config = build(SolveConfig, data, "")
    validate(config)
    return config


def validate(config: SolveConfig) -> None:
    """Ranges, model specs and prices: everything that can be checked before a run starts."""
    for key, rng in RANGES.items():
        value: Any = config
        for part in key.split("."):
            value = getattr(value, part)
        if value is not None and not rng.allows(value):
            example = _example(key, rng)
            flag = FLAGS.get(key, "").split("/")[0]
            raise ConfigError(
                f"{key_name(key)} must be {rng.describe()}, not {value!r}",
                hint=f"e.g. {flag} {example}" if flag else f"e.g. -c {key}={example}",
            )
    _check_prices(config)
    _check_models(config)


def _example(key: str, rng: Range) -> str:
    default: Any = SolveConfig()
    for part in key.split("."):
        default = getattr(default, part)
    if default is not None and rng.allows(default):
        return str(default).lower() if isinstance(default, bool) else str(default)
    return rng.choices[0] if rng.choices else str(rng.low if not rng.low_open else 1)


def _check_prices(config: SolveConfig) -> None:
    for model, pair in config.prices.items():
        ok = isinstance(pair, tuple) and len(pair) == 2
        ok = ok and all(
            isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) and p >= 0
            for p in pair
        )
        if not ok:
            raise ConfigError(
                f"prices.{model} must be [input, output] in $ per 1M tokens, not {pair!r}",
                hint=f"e.g. -c 'prices.{model}=[2.5, 10]'",
            )


def price_table(config: SolveConfig) -> dict[str, Any]:
    """The shipped prices with the config's own on top (a config entry wins)."""
    from harness.llm.accounting import Price
    from harness.llm.prices import DEFAULT_PRICES

    own = {name: Price(float(pair[0]), float(pair[1])) for name, pair in config.prices.items()}
    return {**DEFAULT_PRICES, **own}


def _check_models(config: SolveConfig) -> None:
    """Every model spec parses; with a dollar cap, every API model has a price."""
    from harness.llm.accounting import price_for
    from harness.llm.specs import parse_spec

    specs = [("model", config.model)]
    if config.context.relevance_model:
        specs.append(("context.relevance_model", config.context.relevance_model))
    prices = price_table(config)
    for key, text in specs:
        spec = parse_spec(text)
        # In-process and scripted models cost nothing per token; an API model must be priced.
        if config.budget.max_usd is None or spec.kind != "openai":
            continue
        if price_for(prices, spec.target) is None:
            raise ConfigError(
                f"--max-usd cannot cap {key} {text!r}: no price is known for {spec.target!r}",
                hint=f"give its price in $ per 1M tokens (input, output): "
                f"-c 'prices.{spec.target}=[2.5, 10]', or under prices: in the --config file",
            )


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
            raise ConfigError(
                f"config key {key!r} is a section; give it a mapping",
                hint=f"set one of its keys, e.g. -c {key}.KEY=VALUE",
            )
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
        raise ConfigError(f"config key {key!r}: {value!r} is not a valid {tp}", hint=_hint(key))
    if origin in (Mapping, dict) or tp is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r} must be a mapping", hint=_hint(key))
        return {str(k): _pair(v) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(
            f"config key {key!r} must be true or false, not {value!r}", hint=_hint(key)
        )
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r} must be an integer, not {value!r}", hint=_hint(key))
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config key {key!r} must be a number, not {value!r}", hint=_hint(key))
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key {key!r} must be a string, not {value!r}", hint=_hint(key))
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value).expanduser()
        raise ConfigError(f"config key {key!r} must be a path, not {value!r}", hint=_hint(key))
    return value


def _hint(key: str) -> str:
    """`e.g. -c KEY=DEFAULT` for a key that has a default, else where the keys are listed."""
    default: Any = SolveConfig()
    for part in key.split("."):
        if not dataclasses.is_dataclass(default) or not hasattr(default, part):
            return "the keys and their defaults are listed in docs/solve.md (Configuration)"
        default = getattr(default, part)
    if dataclasses.is_dataclass(default) or isinstance(default, Mapping):
        return f"set one of its keys, e.g. -c {key}.KEY=VALUE"
    shown = (
        "null"
        if default is None
        else str(default).lower()
        if isinstance(default, bool)
        else default
    )
    return f"e.g. -c {key}={shown}"


def _pair(value: Any) -> Any:
    """A price as a tuple: `[in, out]` or `{input: in, output: out}` (checked in validate)."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, Mapping) and set(value) == {"input", "output"}:
        return (value["input"], value["output"])
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
