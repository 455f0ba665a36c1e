"""`harness eval validate`: grade each instance's gold patch and the empty patch.

Environments and grading are right for an instance when its gold patch resolves it and
the unchanged base commit does not. Instances run grouped by (repo, version), so a
group's environment image is built once and, with `prune`, removed when the group is done
(a full data set's images would not fit a disk). Records append as they finish, so a
killed run resumes where it stopped; new selections add to the same directory.

    OUT/validation.jsonl             one record per (instance, gold | empty)
    OUT/instances/<id>/<kind>/       eval.log, patch.diff, report.json, env_build.log
    OUT/validation.json, validation.md     the per-repository table and the exceptions
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.evals.dataset import Instance
from harness.evals.executors import Executor
from harness.evals.grading import GradeOutcome
from harness.evals.records import GradeResult
from harness.evals.worker import GradeJob, PruneJob, PruneOutcome
from harness.store import append_jsonl, read_jsonl, write_text

RECORDS = "validation.jsonl"
KINDS = ("gold", "empty")
# Grades that say the environment, not the patch, is at fault: the instance cannot run here.
CANNOT_RUN = ("env_build_failed", "repo_failed", "no_spec")
MARK_START = "<!-- validation table: start -->"
MARK_END = "<!-- validation table: end -->"
# A failure that shows the test needed the network, which grading keeps off: a host name
# that cannot resolve, or no route (SWE-bench runs the tests online; requests' call hosts).
NETWORK_ERRORS = re.compile(
    r"Temporary failure in name resolution|Name or service not known"
    r"|No address associated with hostname|Network is unreachable"
)
# A pytest failure section's headline: "____ Class.test[x] ____", "____ ERROR at setup of t ____"
# (a long headline leaves one underscore either side).
_SECTION = re.compile(r"^_+ (?:ERROR at (?:setup|teardown) of )?(\S.*?) _+$", re.M)
_BANNER = re.compile(r"^={5,}", re.M)
# Paths of the grading host in a failure ("(log: /home/u/.cache/...)", "mirror at /srv/..."):
# the table is committed and read elsewhere.
_HOST_PATH = re.compile(r"\s*\(log: [^)]*\)| (?:at|in) /\S+")


@dataclass(frozen=True)
class Check:
    """One grade of a validation: the gold or the empty patch of one instance."""

    instance_id: str
    repo: str
    version: str
    kind: str  # "gold" | "empty"
    status: str
    message: str = ""
    python_used: str = ""
    timings: Mapping[str, float] = field(default_factory=dict)
    failed: tuple[str, ...] = ()  # required tests that failed or did not run
    log_path: str = ""  # relative to the output directory
    image: str = ""
    network: tuple[str, ...] = ()  # of `failed`, those whose failure shows a network error
    network_f2p: tuple[str, ...] = ()  # of `network`, the FAIL_TO_PASS tests

    @property
    def resolved(self) -> bool:
        return self.status == "resolved"

    @property
    def resolved_offline(self) -> bool:
        """Unresolved only by PASS_TO_PASS tests that needed the network (kept off here):
        with those left out, every required test passed."""
        return (
            self.status == "unresolved"
            and bool(self.failed)
            and not self.network_f2p
            and set(self.failed) <= set(self.network)
        )

    @property
    def counts_resolved(self) -> bool:
        return self.resolved or self.resolved_offline

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Check:
        return cls(
            **{
                **data,
                "timings": {k: float(v) for k, v in (data.get("timings") or {}).items()},
                "failed": tuple(data.get("failed") or ()),
                "network": tuple(data.get("network") or ()),
                "network_f2p": tuple(data.get("network_f2p") or ()),
            }
        )


def plan(instances: Iterable[Instance], per_version: int | None = None) -> list[list[Instance]]:
    """Groups by (repo, version), in that order; at most `per_version` instances each."""
    groups: dict[tuple[str, str], list[Instance]] = {}
    for inst in instances:
        groups.setdefault((inst.repo, inst.version), []).append(inst)
    if per_version is not None and per_version < 1:
        raise ConfigError("--per-version must be at least 1")
    return [
        groups[key][:per_version] if per_version else groups[key]
        for key in sorted(groups, key=lambda k: (k[0], _version_key(k[1])))
    ]


def read_checks(out: Path) -> list[Check]:
    """Every record; a later record of the same (instance, kind) replaces an earlier one."""
    found: dict[tuple[str, str], Check] = {}
    for data in read_jsonl(out / RECORDS):
        if "status" in data:
            check = Check.from_json(data)
            found[(check.instance_id, check.kind)] = check
    return list(found.values())


class Validator:
    """Runs the gold and empty grades of groups of instances through an executor."""

    def __init__(
        self,
        out: Path,
        executor: Executor,
        *,
        workers: int = 1,
        prune: bool = False,
        retry: bool = False,
        on_progress: Callable[[str], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ConfigError("--workers must be at least 1")
        self.out = out
        self.executor = executor
        self.prune = prune
        self._slots = asyncio.Semaphore(workers)
        self._say = on_progress or (lambda _: None)
        # With `retry`, instances that could not run (environment, mirror, crash) run again.
        self._done = {
            (c.instance_id, c.kind)
            for c in read_checks(out)
            if not (retry and c.status in (*CANNOT_RUN, "error"))
        }
        self._total = 0
        self._count = 0

    async def run(self, groups: Sequence[Sequence[Instance]]) -> None:
        self._total = sum(len(g) for g in groups) * len(KINDS)
        self._count = sum(
            1 for g in groups for i in g for k in KINDS if (i.instance_id, k) in self._done
        )
        await asyncio.gather(*(self._group(g) for g in groups if g))

    async def _group(self, group: Sequence[Instance]) -> None:
        async with self._slots:  # one group per worker: its images are built once
            for inst in group:
                for kind in KINDS:
                    if (inst.instance_id, kind) not in self._done:
                        self._record(inst, kind, await self._grade(inst, kind))
            if self.prune:
                first = group[0]
                result = await self.executor.run(PruneJob(first.repo, first.version))
                if isinstance(result, PruneOutcome) and result.removed:
                    self._say(f"{first.repo} {first.version}: removed {', '.join(result.removed)}")

    async def _grade(self, inst: Instance, kind: str) -> GradeOutcome:
        patch = inst.patch if kind == "gold" else ""
        job = GradeJob(inst, patch, kind, "gold" if kind == "gold" else "", run_empty=True)
        try:
            result = await self.executor.run(job)
        except Exception as exc:  # the executor itself failed: a record, not a crash
            message = f"{self.executor.name} executor failed: {exc!r}"[:2000]
            return GradeOutcome(GradeResult(inst.instance_id, "error", kind, message=message))
        if not isinstance(result, GradeOutcome):
            raise TypeError(f"a grade job returned {type(result).__name__}")
        return result

    def _record(self, inst: Instance, kind: str, outcome: GradeOutcome) -> None:
        grade = outcome.result
        log_path = ""
        if outcome.files:
            folder = self.out / "instances" / inst.instance_id / kind
            folder.mkdir(parents=True, exist_ok=True)
            for name, text in outcome.files.items():
                (folder / name).write_text(text)
            main = "eval.log" if "eval.log" in outcome.files else next(iter(outcome.files))
            log_path = str((folder / main).relative_to(self.out))
        failed = (*grade.fail_to_pass.failure, *grade.pass_to_pass.failure)
        network = network_failures(outcome.files.get("eval.log", ""), failed)
        check = Check(
            inst.instance_id,
            inst.repo,
            inst.version,
            kind,
            grade.status,
            grade.message,
            grade.python_used,
            dict(grade.timings),
            failed,
            log_path,
            grade.image,
            network,
            tuple(t for t in network if t in grade.fail_to_pass.failure),
        )
        append_jsonl(self.out / RECORDS, asdict(check))
        self._done.add((inst.instance_id, kind))
        self._count += 1
        self._say(f"[{self._count}/{self._total}] {inst.instance_id} {kind}: {grade.status}")


@dataclass(frozen=True)
class RepoRow:
    """One repository's line of the validation table."""

    repo: str
    versions: tuple[str, ...]
    instances: int  # with both grades recorded
    can_run: int  # instances whose environment could be built
    gold_resolved: int
    empty_resolved: int
    env_build_s: float | None  # median over versions of building the env layer now
    instance_build_s: float | None  # median over instances of the instance layer
    tests_s: float | None  # median over gold grades of the test command
    exceptions: tuple[str, ...] = ()  # gold not resolved, empty resolved: id, status, why


def network_failures(log: str, failed: Sequence[str]) -> tuple[str, ...]:
    """Of the `failed` tests, those whose pytest failure section in `log` shows a network
    error (the section headline is the test id less its file: "Class.test[param]")."""
    sections: dict[str, str] = {}
    heads = list(_SECTION.finditer(log))
    ends = [h.start() for h in heads[1:]] + [len(log)] * bool(heads)
    for head, end in zip(heads, ends, strict=True):
        body = log[head.end() : end]
        banner = _BANNER.search(body)
        body = body[: banner.start()] if banner else body
        sections[head.group(1)] = sections.get(head.group(1), "") + body
    return tuple(
        test
        for test in failed
        if NETWORK_ERRORS.search(sections.get(".".join(test.split("::")[1:]) or test, ""))
    )


def summarize(checks: Iterable[Check]) -> list[RepoRow]:
    """Per repository. An instance can run here when its environment builds and none of
    its FAIL_TO_PASS tests needs the network; a grade whose only failures are PASS_TO_PASS
    tests that needed the network counts as resolved, and the exceptions name those tests."""
    by_repo: dict[str, dict[str, dict[str, Check]]] = {}
    for c in checks:
        by_repo.setdefault(c.repo, {}).setdefault(c.instance_id, {})[c.kind] = c
    rows = []
    for repo in sorted(by_repo):
        pairs = {i: k for i, k in by_repo[repo].items() if set(KINDS) <= set(k)}
        golds = [k["gold"] for k in pairs.values()]
        empties = [k["empty"] for k in pairs.values()]
        online = {i for i, k in pairs.items() if any(c.network_f2p for c in k.values())}
        runnable = [c for c in golds if c.status not in CANNOT_RUN and c.instance_id not in online]
        env_builds: dict[str, float] = {}
        for c in (*golds, *empties):
            secs = c.timings.get("env_build", 0.0)
            if secs > 0:
                env_builds[c.version] = max(env_builds.get(c.version, 0.0), secs)
        rows.append(
            RepoRow(
                repo,
                tuple(sorted({c.version for c in golds}, key=_version_key)),
                len(pairs),
                len(runnable),
                sum(1 for c in runnable if c.counts_resolved),
                sum(1 for c in empties if c.counts_resolved),
                _median(env_builds.values()),
                _median(
                    c.timings["instance_build"]
                    for c in (*golds, *empties)
                    if c.timings.get("instance_build", 0.0) > 0
                ),
                _median(c.timings["tests"] for c in golds if "tests" in c.timings),
                _exceptions(pairs, online),
            )
        )
    return rows


def _exceptions(pairs: Mapping[str, Mapping[str, Check]], online: set[str]) -> tuple[str, ...]:
    """One line per cause; instances that share a cause share its line."""
    causes: dict[str, list[str]] = {}
    resolving: list[str] = []  # instances whose empty patch resolves
    for ident, kinds in pairs.items():
        gold, empty = kinds["gold"], kinds["empty"]
        if ident in online:
            tests = sorted({t for c in kinds.values() for t in c.network_f2p})
            why = f"cannot run here, FAIL_TO_PASS tests need the network: {_names(tests)}"
        elif gold.resolved_offline:
            left_out = _names(gold.network)
            why = f"gold resolved, leaving out PASS_TO_PASS tests that need the network: {left_out}"
        elif not gold.resolved:
            why = f"gold {gold.status}: {_why(gold)}"
        else:
            why = ""
        if why:
            causes.setdefault(why, []).append(f"{ident} ({gold.version})")
        if empty.counts_resolved and ident not in online:
            resolving.append(f"{ident} ({empty.version})")
    if resolving:
        causes["empty patch resolves"] = resolving
    return tuple(f"{', '.join(who)} {why}" for why, who in causes.items())


def render_table(rows: Sequence[RepoRow], notes: Mapping[str, str] | None = None) -> str:
    """The Markdown table (and the exceptions under it); `notes` adds a line per repo."""
    notes = notes or {}
    lines = [
        "| repository | versions | instances | can run | gold resolved | empty resolved "
        "| median env build (s) | median instance build (s) | median tests (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.repo} | {', '.join(r.versions)} | {r.instances} | {r.can_run} "
            f"| {r.gold_resolved} | {r.empty_resolved} | {_secs(r.env_build_s, 'reused')} "
            f"| {_secs(r.instance_build_s, 'reused')} | {_secs(r.tests_s, '-')} |"
        )
    can_run = sum(r.can_run for r in rows)
    gold = sum(r.gold_resolved for r in rows)
    empty = sum(r.empty_resolved for r in rows)
    share = f"{100 * gold / can_run:.1f}%" if can_run else "n/a"
    lines += [
        f"| **all** | | {sum(r.instances for r in rows)} | {can_run} | {gold} ({share}) "
        f"| {empty} | | | |",
    ]
    exceptions = [(r.repo, e) for r in rows for e in r.exceptions]
    extra = [(repo, note) for repo, note in notes.items() if note]
    if exceptions or extra:
        lines += ["", "Exceptions:", ""]
        lines += [f"- {e}" for _, e in exceptions]
        lines += [f"- {repo}: {note}" for repo, note in extra]
    return "\n".join(lines) + "\n"


def write_summary(out: Path, checks: Sequence[Check], machine: Mapping[str, Any]) -> str:
    rows = summarize(checks)
    table = render_table(rows)
    data = {
        "machine": dict(machine),
        "repositories": [asdict(r) for r in rows],
        "checks": [asdict(c) for c in sorted(checks, key=lambda c: (c.instance_id, c.kind))],
    }
    write_text(out / "validation.json", json.dumps(data, indent=1) + "\n")
    write_text(out / "validation.md", table)
    return table


def replace_section(doc: Path, table: str) -> None:
    """Put `table` between the validation markers of `doc` (a docs page)."""
    text = doc.read_text()
    if MARK_START not in text or MARK_END not in text:
        raise ConfigError(
            f"{doc} has no validation markers",
            hint=f"add the lines {MARK_START} and {MARK_END} where the table goes",
        )
    head, rest = text.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    doc.write_text(f"{head}{MARK_START}\n{table}{MARK_END}{tail}")


def _why(check: Check) -> str:
    if check.failed:
        return _names(check.failed)
    # The first line: the rest is a command's output, and the logs sit in this host's cache.
    first = check.message.strip().splitlines()[0] if check.message.strip() else ""
    return redact(first) or "see its eval.log"


def redact(message: str) -> str:
    """`message` without the grading host's paths."""
    return _HOST_PATH.sub("", message)


def _names(tests: Sequence[str], most: int = 3) -> str:
    more = f" (+{len(tests) - most} more)" if len(tests) > most else ""
    return ", ".join(tests[:most]) + more


def _median(values: Iterable[float]) -> float | None:
    vals = list(values)
    return statistics.median(vals) if vals else None


def _secs(value: float | None, none: str) -> str:
    return none if value is None else f"{value:.0f}"


def _version_key(version: str) -> tuple[Any, ...]:
    parts = version.lstrip("v").split(".")
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)
