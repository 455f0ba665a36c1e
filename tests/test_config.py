"""Configuration: defaults, YAML files, overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import SolveConfig, load_config, to_dict
from harness.errors import ConfigError


def test_defaults_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("samples: 6\nediting:\n  temperature: 0.3\nsandbox:\n  backend: bwrap\n")
    config = load_config(path, ["editing.max_turns=3", "budget.max_usd=2", "model=openai:gpt-4o"])
    assert config.samples == 6 and config.sandbox.backend == "bwrap"
    assert config.editing.temperature == 0.3 and config.editing.max_turns == 3
    assert config.budget.max_usd == 2.0 and config.model == "openai:gpt-4o"
    assert config.testing == SolveConfig().testing  # untouched sections keep defaults


def test_round_trip_through_a_plain_view(tmp_path: Path) -> None:
    import yaml

    config = load_config(None, ["sandbox.ca_bundle=/etc/ssl/x.crt", "prices.m=[1, 2]"])
    path = tmp_path / "again.yaml"
    path.write_text(yaml.safe_dump(to_dict(config)))
    assert load_config(path) == config


@pytest.mark.parametrize(
    "override, message",
    [
        ("editing.temprature=1", "unknown config key 'editing.temprature'"),
        ("samples=many", "must be an integer"),
        ("sandbox.network=maybe", "must be true or false"),
        ("editing=3", "is a section"),
        ("no-equals-sign", "not of the form key.path=value"),
    ],
)
def test_errors_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_unknown_key_lists_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["editing.temprature=1"])
    assert info.value.hint and "temperature" in info.value.hint


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("samples: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_speculation_settings_come_through_engine_overrides() -> None:
    config = load_config(
        None,
        [
            "engine.speculate=6",
            'engine.draft_model="self:3"',
            "engine.conformal_alpha=0.2",
            "engine.rejection_fallback=resample",
            "engine.step_delimiter=';'",
        ],
    )
    engine = config.engine
    assert engine.speculation and engine.draft() == (None, 3)
    assert (engine.speculate, engine.conformal_alpha, engine.step_delimiter) == (6, 0.2, ";")
    spec = engine.spec_config(cost_ratio=0.3, delimiter_ids=frozenset({5}))
    assert spec.step_level and spec.k == 6 and spec.cost_ratio == 0.3
    assert spec.fallback == "resample" and spec.delimiter_ids == {5}
    named = load_config(None, ['engine.draft_model="hf:/models/small?gguf=s.gguf"']).engine
    assert named.draft() == ("hf:/models/small?gguf=s.gguf", None)
    assert named.spec_config(cost_ratio=0.1, delimiter_ids=frozenset()).k == 4  # the default
    assert not named.lookup


def test_lookup_drafts_are_the_default_and_can_be_turned_off() -> None:
    default = SolveConfig().engine
    assert default.speculation and default.lookup and not default.requested
    assert default.spec_config(cost_ratio=0.05, delimiter_ids=frozenset()).k == 12
    suffix = load_config(None, ["engine.draft_model=suffix", "engine.speculate=6"]).engine
    assert suffix.lookup and suffix.requested and suffix.draft() == (None, None)
    for off in (["engine.draft_model=none"], ["engine.speculate=0"]):
        engine = load_config(None, off).engine
        assert not engine.speculation and not engine.lookup
    # Step level needs a model drafter: without one named it is the self-draft, not lookup.
    steps = load_config(None, ["engine.conformal_alpha=0.2"]).engine
    assert steps.speculation and not steps.lookup and steps.draft() == (None, None)


@pytest.mark.parametrize(
    "override, message",
    [
        ("engine.speculate=-1", "engine.speculate must be >= 0"),
        ("engine.conformal_alpha=0", r"engine.conformal_alpha must be in \(0, 1\]"),
        ("engine.conformal_alpha=1.5", r"engine.conformal_alpha must be in \(0, 1\]"),
        ("engine.rejection_fallback=peer", "unknown engine.rejection_fallback"),
        ("engine.draft_model=self:none", "needs a layer count"),
        ("engine.self_draft_layers=0", "self_draft_layers must be >= 1"),
        ("engine.draft_model=suffix engine.conformal_alpha=0.2", "needs a draft model"),
    ],
)
def test_bad_speculation_settings_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, override.split(" "))


@pytest.mark.parametrize(
    "override, message",
    [
        ("samples=-1", r"samples \(-n/--samples\) must be at least 1, not -1"),
        ("samples=0", r"samples \(-n/--samples\) must be at least 1, not 0"),
        ("testing.max_turns=0", "testing.max_turns must be at least 1"),
        ("editing.max_turns=-3", "editing.max_turns must be at least 1"),
        ("selection.max_turns=0", "selection.max_turns must be at least 1"),
        ("editing.max_tokens=0", "editing.max_tokens must be at least 1"),
        ("testing.exec_timeout=0", "testing.exec_timeout must be greater than 0"),
        ("editing.temperature=-0.1", "editing.temperature must be between 0 and 2"),
        ("editing.temperature=.nan", "editing.temperature must be between 0 and 2, not nan"),
        ("selection.top_k=0", "selection.top_k must be at least 1"),
        ("context.rankings=0", "context.rankings must be at least 1"),
        ("concurrency.execs=0", "concurrency.execs must be at least 1"),
        ("concurrency.llm_calls=0", "concurrency.llm_calls must be at least 1"),
        ("concurrency.samples=-1", "concurrency.samples must be at least 0"),
        ("budget.max_tokens=0", r"budget.max_tokens \(--max-tokens\) must be at least 1"),
        ("budget.max_tokens=-5", r"budget.max_tokens \(--max-tokens\) must be at least 1"),
        ("budget.max_usd=0", r"budget.max_usd \(--max-usd\) must be greater than 0"),
        ("budget.max_usd=.inf", r"budget.max_usd \(--max-usd\) must be greater than 0"),
        ("seed=1180591620717411303424", "seed must be between 0 and 2147483647"),
        ("sandbox.backend=qemu", "must be one of docker, bwrap, local"),
        ("sandbox.cpus=0", "sandbox.cpus must be greater than 0"),
        ("sandbox.memory_mb=1", "sandbox.memory_mb must be at least 64"),
        ("sandbox.disk_mb=0", "sandbox.disk_mb must be at least 16"),
        ("engine.block_size=0", "engine.block_size must be at least 1"),
        ("engine.kv_memory_gb=-1", "engine.kv_memory_gb must be greater than 0"),
        ("prices.x=[1]", r"prices.x must be \[input, output\]"),
        ("prices.x=[1, -2]", r"prices.x must be \[input, output\]"),
        ("model=gpt-17", "unknown model name 'gpt-17'"),
        ("context.relevance_model=nope:x", "unknown model spec"),
    ],
)
def test_values_out_of_range_are_refused_when_the_config_loads(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, [override])
    assert "\n" not in info.value.message and info.value.hint


def test_a_config_file_is_checked_as_a_whole(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("samples: 2\nconcurrency:\n  execs: 0\n")
    with pytest.raises(ConfigError, match=r"concurrency\.execs must be at least 1"):
        load_config(path)


def test_a_dollar_cap_needs_a_price_for_every_api_model() -> None:
    with pytest.raises(ConfigError, match="no price is known for 'my-model'") as info:
        load_config(None, ["model=openai:my-model", "budget.max_usd=5"])
    assert "prices.my-model=[" in (info.value.hint or "")
    with pytest.raises(ConfigError, match=r"context\.relevance_model"):
        load_config(
            None,
            ["model=openai:gpt-4o", "context.relevance_model=openai:cheap", "budget.max_usd=5"],
        )
    # Priced by the shipped table, by the config, or free (in-process / scripted models).
    load_config(None, ["model=openai:gpt-4o-2024-08-06", "budget.max_usd=5"])
    load_config(None, ["model=openai:my-model", "budget.max_usd=5", "prices.my-model=[1, 2]"])
    load_config(None, ["model=smollm2-135m", "budget.max_usd=5"])
    load_config(None, ["model=openai:my-model"])  # no dollar cap: no price needed


def test_config_prices_add_to_and_override_the_shipped_table() -> None:
    from harness.config import price_table
    from harness.llm.accounting import Price

    config = load_config(None, ["prices.gpt-4o=[1, 2]", "prices.mine={input: 0.5, output: 0.75}"])
    table = price_table(config)
    assert table["gpt-4o"] == Price(1.0, 2.0) and table["mine"] == Price(0.5, 0.75)
    assert table["gpt-4o-mini"] == Price(0.15, 0.6)


def test_one_file_holds_every_commands_section(tmp_path: Path) -> None:
    from harness.config import load

    path = tmp_path / "harness.yaml"
    path.write_text(
        "model: openai:gpt-4o\nsamples: 6\nengine:\n  policy: lru\n"
        "eval:\n  workers: 4\n  specs: [a.yaml, b.json]\n  apt_packages: []\n"
        "serve:\n  port: 0\n  served_model_names: [coder]\n"
        "bot:\n  label: fix-me\n  allowed_models: [openai:gpt-4o]\n  comment_max_usd: 3\n"
    )
    config = load(path)
    assert config.solve.samples == 6 and config.solve.engine.policy == "lru"
    assert config.eval.workers == 4 and config.eval.specs == (Path("a.yaml"), Path("b.json"))
    assert config.eval.apt_packages == () and config.eval.test_timeout == 1800.0
    assert config.serve.port == 0 and config.serve.served_model_names == ("coder",)
    assert config.bot.label == "fix-me" and config.bot.comment_max_usd == 3.0
    assert load_config(path) == config.solve  # the solve config alone, as before


def test_layers_environment_run_file_overrides_flags(tmp_path: Path) -> None:
    """Lowest first: defaults, environment, a resumed run's own config, the file, -c, flags."""
    from harness.config import load

    path = tmp_path / "c.yaml"
    path.write_text("samples: 3\nbase_url: http://file/v1\neval:\n  workers: 2\n")
    env = {"base_url": "http://env/v1", "eval.git_mirror": "/mirrors/{owner}+{name}"}
    config = load(None, environment=env)
    assert (
        config.solve.base_url == "http://env/v1"
        and config.eval.git_mirror == env["eval.git_mirror"]
    )
    config = load(path, environment=env)
    assert (
        config.solve.base_url == "http://file/v1"
        and config.eval.git_mirror == env["eval.git_mirror"]
    )
    config = load(path, ["samples=5", "eval.workers=3"], flags={"samples": 7, "eval.workers": None})
    assert config.solve.samples == 7 and config.eval.workers == 3  # None: the flag was not given
    run = load(None, ["budget.max_tokens=900"]).solve
    resumed = load(None, flags={"budget.max_tokens": 1000}, base=run, environment=env).solve
    assert resumed.budget.max_tokens == 1000 and resumed.base_url is None  # the run's own
    assert load(None, base=run).solve == run


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"samples": 0}, r"samples \(-n/--samples\) must be at least 1, not 0"),
        ({"samples": "many"}, "must be an integer"),
        ({"budget.max_usd": -1.0}, r"budget.max_usd \(--max-usd\) must be greater than 0"),
        ({"sandbox.backend": "qemu"}, "must be one of docker, bwrap, local"),
        ({"engine.speculate": -1}, "engine.speculate must be >= 0"),
        ({"model": "gpt-17"}, "unknown model name 'gpt-17'"),
        ({"eval.workers": 0}, r"eval.workers \(--workers\) must be at least 1"),
        ({"eval.images": "cloud"}, r"eval.images \(--images\) must be one of local, official"),
        ({"eval.test_timeout": 0.0}, r"eval.test_timeout \(--test-timeout\) must be greater"),
        ({"serve.port": 70000}, r"serve.port \(--port\) must be between 0 and 65535"),
        ({"serve.served_model_names": (" ",)}, "--served-model-name must not be empty"),
        ({"bot.min_permission": "triage"}, r"bot.min_permission \(--min-permission\) must be one"),
        ({"bot.comment_max_samples": 0}, r"--comment-max-samples\) must be at least 1"),
        ({"bot.allowed_models": ("script:x.py",)}, "allowed model 'script:x.py'"),
        ({"nosuch": 1}, "unknown config key 'nosuch'"),
        ({"eval.nosuch": 1}, "unknown config key 'eval.nosuch'"),
    ],
)
def test_flags_pass_the_same_checks_as_the_file(flags: dict[str, object], message: str) -> None:
    from harness.config import load

    with pytest.raises(ConfigError, match=message) as info:
        load(None, flags=flags)
    assert "\n" not in info.value.message and info.value.hint


@pytest.mark.parametrize(
    "text, message",
    [
        ("eval: 3\n", "config key 'eval' is a section"),
        ("eval:\n  workerz: 2\n", "unknown config key 'eval.workerz'"),
        ("serve:\n  port: 80.5\n", "'serve.port' must be an integer"),
        ("eval:\n  specs: a.yaml\n", "'eval.specs' must be a list"),
        ("bot:\n  comment_max_usd: 0\n", "comment_max_usd .* must be greater than 0"),
        ("evals:\n  workers: 2\n", "unknown config key 'evals'"),
    ],
)
def test_sections_are_checked_when_the_file_loads(tmp_path: Path, text: str, message: str) -> None:
    from harness.config import load

    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load(path)
    assert info.value.hint
