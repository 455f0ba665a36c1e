"""Predictions files: JSON lines with bad lines reported, JSON lists, dicts keyed by id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.evals.predictions import read_predictions


def test_jsonl_with_malformed_lines(tmp_path: Path) -> None:
    path = tmp_path / "preds.jsonl"
    good = {"instance_id": "a", "model_name_or_path": "m", "model_patch": "diff"}
    path.write_text(
        "\n".join(
            [
                json.dumps(good),
                "{not json",
                json.dumps({"model_patch": "x"}),  # no instance_id
                json.dumps({"instance_id": "b", "model_patch": 3}),
                json.dumps({"instance_id": "c", "model_patch": None}),  # null: empty patch
                "",
                json.dumps({**good, "model_patch": "newer"}),  # the last one wins
            ]
        )
    )
    preds, bad = read_predictions(path)
    assert {p.instance_id: p.model_patch for p in preds} == {"a": "newer", "c": ""}
    assert [(b.where, b.instance_id) for b in bad] == [
        ("line 2", ""),
        ("line 3", ""),
        ("line 4", "b"),
    ]
    assert "not JSON" in bad[0].reason and "no instance_id" in bad[1].reason
    assert "not a string" in bad[2].reason


def test_json_list_and_keyed_dict(tmp_path: Path) -> None:
    listed = tmp_path / "l.json"
    listed.write_text(json.dumps([{"instance_id": "a", "model_patch": "p"}, 7]))
    preds, bad = read_predictions(listed)
    assert [p.instance_id for p in preds] == ["a"] and bad[0].where == "entry 2"
    keyed = tmp_path / "k.json"
    keyed.write_text(json.dumps({"a": {"model_patch": "p", "model_name_or_path": "m"}}))
    preds, bad = read_predictions(keyed)
    assert preds[0].instance_id == "a" and preds[0].model_name_or_path == "m" and not bad


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_predictions(tmp_path / "none.jsonl")
