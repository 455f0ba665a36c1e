"""Ensembling ("Barrel of Monkeys"): candidates from other systems' predictions files.

Accepts the SWE-bench predictions formats: JSON lines, a JSON list, or a JSON object keyed by
instance id, each record with `instance_id`, `model_name_or_path` and `model_patch`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.types import Candidate


def _records(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read predictions file {path}: {exc.strerror}") from exc
    stripped = text.strip()
    if not stripped:
        return []
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError:
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        return records
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and ("model_patch" in data or "instance_id" in data):
        return [data]
    if isinstance(data, dict):
        return [
            {"instance_id": key, **value} for key, value in data.items() if isinstance(value, dict)
        ]
    raise ConfigError(f"{path}: expected predictions as JSON lines, a list or an object")


def load_candidates(path: Path, task_id: str) -> list[Candidate]:
    """Candidates for `task_id`; a file with a single prediction applies to any task."""
    records = [r for r in _records(path) if isinstance(r, dict)]
    for record in records:
        if "model_patch" not in record:
            raise ConfigError(
                f"{path}: a prediction lacks `model_patch`",
                hint="each record needs instance_id, model_name_or_path, model_patch",
            )
    matching = [r for r in records if r.get("instance_id") == task_id]
    if not matching and len(records) == 1:
        matching = records
    out = []
    for number, record in enumerate(matching):
        model = str(record.get("model_name_or_path") or path.stem)
        out.append(
            Candidate(
                f"ens-{number:02d}", str(record["model_patch"] or ""), source=f"ensemble:{model}"
            )
        )
    return out
