"""SWE-bench-style data sets: load them through `datasets`, select instances, parse records.

A data set is a hub id (`princeton-nlp/SWE-bench_Lite`) or a local .json/.jsonl/.parquet file
in the same schema. `datasets` is imported only when a data set is actually loaded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, TaskError

LOCAL_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
REQUIRED = ("instance_id", "repo", "base_commit")


@dataclass(frozen=True)
class Instance:
    """One data-set record (the public SWE-bench fields, parsed)."""

    instance_id: str
    repo: str  # "owner/name" on GitHub
    base_commit: str
    problem_statement: str = ""
    patch: str = ""  # the reference (gold) fix
    test_patch: str = ""
    fail_to_pass: tuple[str, ...] = ()
    pass_to_pass: tuple[str, ...] = ()
    version: str = ""
    environment_setup_commit: str = ""
    hints_text: str = ""
    created_at: str = ""
    extra: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def owner(self) -> str:
        return self.repo.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.repo.split("/", 1)[-1]

    @property
    def setup_commit(self) -> str:
        """The commit the environment is installed from (the base commit when unset)."""
        return self.environment_setup_commit or self.base_commit

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Instance:
        """Parse one record; TaskError names the field that is missing or malformed."""
        missing = [k for k in REQUIRED if not record.get(k)]
        if missing:
            ident = record.get("instance_id") or "<no instance_id>"
            raise TaskError(f"data-set record {ident} lacks {', '.join(missing)}")
        repo = str(record["repo"])
        if repo.count("/") != 1:
            raise TaskError(f"{record['instance_id']}: repo {repo!r} is not 'owner/name'")
        known = {
            "instance_id",
            "repo",
            "base_commit",
            "problem_statement",
            "patch",
            "test_patch",
            "FAIL_TO_PASS",
            "PASS_TO_PASS",
            "version",
            "environment_setup_commit",
            "hints_text",
            "created_at",
        }
        extra = {k: str(v) for k, v in record.items() if k not in known and v is not None}
        return cls(
            instance_id=str(record["instance_id"]),
            repo=repo,
            base_commit=str(record["base_commit"]),
            problem_statement=str(record.get("problem_statement") or ""),
            patch=str(record.get("patch") or ""),
            test_patch=str(record.get("test_patch") or ""),
            fail_to_pass=_test_list(record, "FAIL_TO_PASS"),
            pass_to_pass=_test_list(record, "PASS_TO_PASS"),
            version=_version(record.get("version")),
            environment_setup_commit=str(record.get("environment_setup_commit") or ""),
            hints_text=str(record.get("hints_text") or ""),
            created_at=str(record.get("created_at") or ""),
            extra=extra,
        )

    def to_record(self) -> dict[str, Any]:
        """The SWE-bench record again (test lists as JSON strings, as the hub stores them)."""
        return {
            **self.extra,
            "instance_id": self.instance_id,
            "repo": self.repo,
            "base_commit": self.base_commit,
            "problem_statement": self.problem_statement,
            "patch": self.patch,
            "test_patch": self.test_patch,
            "FAIL_TO_PASS": json.dumps(list(self.fail_to_pass)),
            "PASS_TO_PASS": json.dumps(list(self.pass_to_pass)),
            "version": self.version,
            "environment_setup_commit": self.environment_setup_commit,
            "hints_text": self.hints_text,
            "created_at": self.created_at,
        }


def _test_list(record: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = record.get(key)
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise TaskError(f"{record['instance_id']}: {key} is not a JSON list") from exc
    if not isinstance(value, list | tuple) or not all(isinstance(t, str) for t in value):
        raise TaskError(f"{record['instance_id']}: {key} is not a list of test names")
    return tuple(value)


def _version(value: Any) -> str:
    # Parquet / JSON inference can turn "0.20" into the float 0.2; SWE-bench versions are
    # strings, so a float is printed back with the shortest repr that round-trips.
    if value is None:
        return ""
    return value if isinstance(value, str) else repr(value)


def load_instances(
    source: str, *, split: str = "test", cache_dir: Path | None = None
) -> list[Instance]:
    """All records of a hub data set (`split`) or a local json/jsonl/parquet file."""
    try:
        import datasets
    except ImportError as exc:
        raise ConfigError(
            "the `datasets` package is missing", hint="pip install 'harness[eval]'"
        ) from exc
    path = Path(source).expanduser()
    cache = str(cache_dir) if cache_dir is not None else None
    try:
        if path.exists():
            builder = LOCAL_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise ConfigError(
                    f"{path} is not a .json, .jsonl or .parquet file",
                    hint="convert the data set to JSON lines in the SWE-bench schema",
                )
            rows = datasets.load_dataset(
                builder, data_files=str(path), split="train", cache_dir=cache
            )
        else:
            rows = datasets.load_dataset(source, split=split, cache_dir=cache)
    except ConfigError:
        raise
    except Exception as exc:  # the hub raises many kinds (offline, not found, bad split)
        raise TaskError(
            f"could not load data set {source!r} (split {split!r}): {exc}",
            hint="on an offline machine pass a local .jsonl or .parquet file in the "
            "SWE-bench schema",
        ) from exc
    instances = [Instance.from_record(row) for row in rows]
    seen: set[str] = set()
    for inst in instances:
        if inst.instance_id in seen:
            raise TaskError(f"data set {source!r} has instance {inst.instance_id} twice")
        seen.add(inst.instance_id)
    return instances


@dataclass(frozen=True)
class Selection:
    """Which instances to take: ids (`--instances`), a regex (`--filter`), a slice."""

    ids: tuple[str, ...] = ()
    pattern: str | None = None
    start: int | None = None
    stop: int | None = None

    @classmethod
    def parse(
        cls, instances: str | None = None, pattern: str | None = None, slice_: str | None = None
    ) -> Selection:
        ids = tuple(i.strip() for i in (instances or "").split(",") if i.strip())
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"--filter {pattern!r} is not a regex: {exc}") from None
        start, stop = parse_slice(slice_) if slice_ else (None, None)
        return cls(ids=ids, pattern=pattern, start=start, stop=stop)

    def describe(self) -> dict[str, Any]:
        return {"ids": list(self.ids), "filter": self.pattern, "slice": [self.start, self.stop]}


def parse_slice(text: str) -> tuple[int | None, int | None]:
    """'A:B', 'A:', ':B' or 'N' (the first N) into slice bounds."""
    parts = text.split(":")
    try:
        if len(parts) == 1:
            return None, int(parts[0])
        if len(parts) == 2:
            return (int(parts[0]) if parts[0] else None, int(parts[1]) if parts[1] else None)
    except ValueError:
        pass
    raise ConfigError(f"--slice {text!r} is not A:B", hint="e.g. --slice 0:50 or --slice 10:")


def select(instances: Sequence[Instance], selection: Selection) -> tuple[list[Instance], list[str]]:
    """The selected instances in data-set order, and the requested ids the set lacks."""
    chosen: Iterable[Instance] = instances
    unknown: list[str] = []
    if selection.ids:
        wanted = set(selection.ids)
        known = {i.instance_id for i in instances}
        unknown = [i for i in dict.fromkeys(selection.ids) if i not in known]
        chosen = [i for i in chosen if i.instance_id in wanted]
    if selection.pattern:
        rx = re.compile(selection.pattern)
        chosen = [i for i in chosen if rx.search(i.instance_id)]
    result = list(chosen)[selection.start : selection.stop]
    return result, unknown
