"""Configuration: defaults, YAML files, overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import SolveConfig, load_config, to_dict
from harness.errors import ConfigError


def test_defaults_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("samples: 6\nediting:\n  temperature: 0.3\nsandbox:\n  backend: bwrap\n")
    config = load_config(path, ["editing.max_turns=3", "budget.max_usd=2", "model=openai:gpt"])
    assert config.samples == 6 and config.sandbox.backend == "bwrap"
    assert config.editing.temperature == 0.3 and config.editing.max_turns == 3
    assert config.budget.max_usd == 2.0 and config.model == "openai:gpt"
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
