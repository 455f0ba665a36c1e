"""Typed configuration: frozen dataclasses, one YAML file for every command, `-c key.path=value`
overrides and command-line flags on top.

The file holds the solve config at its top level and one section per other command (`eval:`,
`serve:`, `bot:`). Layers, lowest first: defaults, values the CLI takes from the environment,
the file, `-c` overrides, flags. Unknown keys, ill-typed values and values out of range are
ConfigErrors that name the key (and the flag that sets it), raised once, when the whole config
has loaded: before any work starts or any directory is made.
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
    disk_mb: int = 4096  # each writable file system of a sandbox (work tree, /tmp)
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
class EvalSettings:
    """`harness eval run/grade/validate` (and the environment images of `solve --dataset`)."""

    git_mirror: str | None = None  # where repositories live: a path or URL with {owner}, {name}
    specs: tuple[Path, ...] = ()  # extra env spec files {repo: {version: spec}}
    images: str = "local"  # local (build from specs) or official (pull swebench's)
    ca_bundle: Path | None = None  # CA bundle for HTTPS in image builds; None: the host's
    apt_packages: tuple[str, ...] | None = None  # Debian packages in env images; None: swebench's
    rebuild_images: bool = False
    test_timeout: float = 1800.0  # seconds the tests of one instance may run
    test_memory_mb: int = 4096  # memory of one grading sandbox
    test_network: bool = False  # let the graded tests use the network (swebench's have it)
    workers: int = 1  # instances (or groups) in flight
    executor: str = "local"  # local or ray
    ray_address: str | None = None  # a running Ray cluster; None: start one
    model_name: str = "harness"  # model_name_or_path written to predictions
    include_hints: bool = False  # give the solver the data set's hints_text too


@dataclass(frozen=True)
class ServeSettings:
    """`harness serve` (the model and its engine are the top-level `model:` and `engine:`)."""

    host: str = "127.0.0.1"
    port: int = 8000  # 0 picks a free one
    device: str | None = None  # cpu, cuda, cuda:1 ...; None: a GPU if there is one
    served_model_names: tuple[str, ...] = ()  # names clients may send; (): the model's own


@dataclass(frozen=True)
class BotSettings:
    """`harness bot github`: who may trigger a run and what a `/harness solve` comment may ask.
    The runs themselves use the solve config (top level)."""

    label: str = "harness"
    min_permission: str = "write"  # write, maintain or admin
    branch: str = "harness/issue-{number}"
    test_path: str = "tests/harness/test_issue_{number}.py"
    remote: str = "origin"
    comment_max_samples: int = 16  # most samples a comment may ask for
    comment_max_usd: float = 20.0  # largest dollar budget a comment may ask for
    allowed_models: tuple[str, ...] = ()  # models a comment may pick; (): none


SECTIONS = ("eval", "serve", "bot")


@dataclass(frozen=True)
class Config:
    """The whole --config file: the solve config at the top level, one section per command."""

    solve: SolveConfig = field(default_factory=SolveConfig)
    eval: EvalSettings = field(default_factory=EvalSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    bot: BotSettings = field(default_factory=BotSettings)


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
# Dotted key (as in the file) -> allowed values (None is always allowed where the type is
# optional). Keys without a section are the solve config's.
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
    "sandbox.disk_mb": Range(16),
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
SECTION_RANGES: dict[str, Range] = {
    "eval.images": Range(choices=("local", "official")),
    "eval.test_timeout": _POSITIVE,
    "eval.test_memory_mb": Range(64),
    "eval.workers": _AT_LEAST_1,
    "eval.executor": Range(choices=("local", "ray")),
    "serve.port": Range(0, 65535),
    "bot.min_permission": Range(choices=("write", "maintain", "admin")),
    "bot.comment_max_samples": _AT_LEAST_1,
    "bot.comment_max_usd": _POSITIVE,
}
# Keys that a command-line option sets (the same name on every command that has it), named
# in messages next to the key.
FLAGS: dict[str, str] = {
    "samples": "-n/--samples",
    "model": "-m/--model",
    "base_url": "--base-url",
    "sandbox.backend": "--backend",
    "budget.max_tokens": "--max-tokens",
    "budget.max_usd": "--max-usd",
    "eval.images": "--images",
    "eval.test_timeout": "--test-timeout",
    "eval.test_memory_mb": "--test-memory-mb",
    "eval.workers": "--workers",
    "eval.executor": "--executor",
    "serve.port": "--port",
    "bot.min_permission": "--min-permission",
    "bot.comment_max_samples": "--comment-max-samples",
    "bot.comment_max_usd": "--comment-max-usd",
}


def key_name(key: str) -> str:
    """`samples (-n/--samples)`: the config key and the option that sets it."""
    return f"{key} ({FLAGS[key]})" if key in FLAGS else key


def load_config(path: Path | None = None, overrides: Iterable[str] = ()) -> SolveConfig:
    """The solve config: defaults, then the YAML file, then `key.path=value` overrides (values
    parsed as YAML); the whole file is checked."""
    return load(path, overrides).solve


def load(
    path: Path | None = None,
    overrides: Iterable[str] = (),
    *,
    flags: Mapping[str, Any] | None = None,
    environment: Mapping[str, Any] | None = None,
    base: SolveConfig | None = None,
) -> Config:
    """The whole config, checked once.

    Layers, lowest first: the defaults; `environment` (dotted key -> value, what the CLI takes
    from environment variables); `base` (a run's own solve config, on resume); the YAML file at
    `path`; `overrides` (`key.path=value`); `flags` (dotted key -> typed value; None = not
    given). Dotted keys are as in the file: `samples`, `budget.max_usd`, `eval.workers`.
    """
    data: dict[str, Any] = {}
    for key, value in (environment or {}).items():
        if value is not None:
            _put(data, key, value, key)
    if base is not None:
        _merge(data, to_dict(base))
    if path is not None:
        _merge(data, read_file(path))
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
        _put(data, key.strip(), value, item)
    config = _build_config(data)
    for key, value in (flags or {}).items():
        if value is not None:
            config = replace_key(config, key, value)
    validate_config(config)
    return config


def read_file(path: Path) -> dict[str, Any]:
    """The mapping a YAML config file holds."""
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
    return loaded


def _put(data: dict[str, Any], key: str, value: Any, item: str) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section", hint=_hint(part))
    node[parts[-1]] = value


def _merge(data: dict[str, Any], upper: Mapping[str, Any]) -> None:
    """`upper`'s values over `data`'s, section by section."""
    for key, value in upper.items():
        if isinstance(value, Mapping) and isinstance(data.get(key), dict):
            _merge(data[key], value)
        else:
            data[key] = value


def _build_config(data: Mapping[str, Any]) -> Config:
    solve = {k: v for k, v in data.items() if k not in SECTIONS}
    names = {f.name for f in dataclasses.fields(SolveConfig)}
    for key in solve:
        if key not in names:
            raise ConfigError(
                f"unknown config key {key!r}",
                hint=f"valid keys: {', '.join(sorted([*names, *SECTIONS]))}",
            )
    sections = {
        name: _coerce(typing.get_type_hints(Config)[name], data[name], name)
        for name in SECTIONS
        if name in data
    }
    return Config(solve=build(SolveConfig, solve, ""), **sections)


def _attr_path(key: str) -> list[str]:
    """A file's dotted key -> the attribute path in `Config`."""
    parts = key.split(".")
    return parts if parts[0] in SECTIONS else ["solve", *parts]


def get_key(config: Config, key: str) -> Any:
    value: Any = config
    for part in _attr_path(key):
        value = getattr(value, part)
    return value


def replace_key(config: Config, key: str, value: Any) -> Config:
    """`config` with one value replaced (`dataclasses.replace` down the path), the value
    checked and converted as if the file held it."""

    def put(obj: Any, parts: list[str]) -> Any:
        name = parts[0]
        if isinstance(obj, type) or not dataclasses.is_dataclass(obj):
            raise ConfigError(f"unknown config key {key!r}", hint=_hint(key))
        if name not in {f.name for f in dataclasses.fields(obj)}:
            raise ConfigError(f"unknown config key {key!r}", hint=_hint(key))
        if len(parts) == 1:
            new = _coerce(typing.get_type_hints(type(obj))[name], value, key)
        else:
            new = put(getattr(obj, name), parts[1:])
        return dataclasses.replace(typing.cast(Any, obj), **{name: new})

    return put(config, _attr_path(key))  # type: ignore[no-any-return]


def validate_config(config: Config) -> None:
    """Everything that can be checked before any command starts: the solve config's ranges,
    models and prices, and each command's section."""
    validate(config.solve)
    for key, rng in SECTION_RANGES.items():
        _check_range(key, get_key(config, key), rng)
    if any(not name.strip() for name in config.serve.served_model_names):
        raise ConfigError(
            "--served-model-name must not be empty", hint="e.g. --served-model-name gpt-4o"
        )
    if config.bot.allowed_models:
        from harness.bot.events import check_listed_model

        for spec in config.bot.allowed_models:
            check_listed_model(spec)


def validate(config: SolveConfig) -> None:
    """Ranges, model specs and prices: everything that can be checked before a run starts."""
    for key, rng in RANGES.items():
        _check_range(key, get_key(Config(solve=config), key), rng)
    _check_prices(config)
    _check_models(config)


def _check_range(key: str, value: Any, rng: Range) -> None:
    if value is not None and not rng.allows(value):
        example = _example(key, rng)
        flag = FLAGS.get(key, "").split("/")[0]
        raise ConfigError(
            f"{key_name(key)} must be {rng.describe()}, not {value!r}",
            hint=f"e.g. {flag} {example}" if flag else f"e.g. -c {key}={example}",
        )


def _example(key: str, rng: Range) -> str:
    default = get_key(Config(), key)
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
    if origin is tuple:
        (item, *_) = typing.get_args(tp)  # tuple[X, ...]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} must be a list, not {value!r}", hint=_hint(key))
        return tuple(_coerce(item, v, key) for v in value)
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
    default: Any = Config()
    for part in _attr_path(key):
        if not dataclasses.is_dataclass(default) or not hasattr(default, part):
            return "the keys and their defaults are listed in docs/solve.md (Configuration)"
        default = getattr(default, part)
    if dataclasses.is_dataclass(default) or isinstance(default, Mapping):
        return f"set one of its keys, e.g. -c {key}.KEY=VALUE"
    if isinstance(default, tuple):
        return f"e.g. -c '{key}=[...]' (a list)"
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
