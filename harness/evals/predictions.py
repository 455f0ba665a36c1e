"""Predictions in the official SWE-bench format: instance_id, model_name_or_path, model_patch.

Read from JSON lines (one object a line), a JSON list, or a JSON object keyed by instance
id. A line that does not parse is reported with its line number, never fatal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError


@dataclass(frozen=True)
class Prediction:
    instance_id: str
    model_patch: str
    model_name_or_path: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "instance_id": self.instance_id,
            "model_name_or_path": self.model_name_or_path,
            "model_patch": self.model_patch,
        }


@dataclass(frozen=True)
class BadPrediction:
    """A predictions entry that could not be used, and why."""

    where: str  # "line 7" or "entry 3"
    reason: str
    instance_id: str = ""  # when the entry got that far


def parse_prediction(data: Any) -> Prediction:
    """One entry; ValueError says what is wrong with it."""
    if not isinstance(data, Mapping):
        raise ValueError("not a JSON object")
    ident = data.get("instance_id")
    if not isinstance(ident, str) or not ident:
        raise ValueError("no instance_id")
    patch = data.get("model_patch")
    if patch is None:
        patch = ""  # SWE-bench treats a null patch as an empty one
    if not isinstance(patch, str):
        raise ValueError("model_patch is not a string")
    model = data.get("model_name_or_path") or ""
    return Prediction(ident, patch, str(model))


def read_predictions(path: Path) -> tuple[list[Prediction], list[BadPrediction]]:
    """The usable predictions (last one wins per instance) and the entries that were not."""
    if not path.is_file():
        raise ConfigError(f"predictions file {path} does not exist")
    text = path.read_text(encoding="utf-8", errors="replace")
    entries: list[tuple[str, Any]] = []
    bad: list[BadPrediction] = []
    stripped = text.lstrip()
    whole: Any = None
    if stripped[:1] in ("[", "{"):
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None  # JSON lines also start with "{"
    if isinstance(whole, list):
        entries = [(f"entry {n}", e) for n, e in enumerate(whole, 1)]
    elif isinstance(whole, dict) and "instance_id" not in whole:
        entries = [
            (f"entry {k}", {"instance_id": k, **v} if isinstance(v, Mapping) else v)
            for k, v in whole.items()
        ]
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append((f"line {n}", json.loads(line)))
            except json.JSONDecodeError as exc:
                bad.append(BadPrediction(f"line {n}", f"not JSON: {exc.msg}"))
    found: dict[str, Prediction] = {}
    for where, data in entries:
        try:
            pred = parse_prediction(data)
        except ValueError as exc:
            ident = data.get("instance_id", "") if isinstance(data, Mapping) else ""
            bad.append(BadPrediction(where, str(exc), str(ident or "")))
            continue
        found[pred.instance_id] = pred
    return list(found.values()), bad
