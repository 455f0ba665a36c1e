"""GitHub Actions event payloads -> a `Trigger` (or why the event is ignored), and the
`/harness solve [options]` command parsed with shlex against an allow-list.
"""

from __future__ import annotations

import hashlib
import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from harness.bot.github import check_full_name
from harness.bot.models import Issue, issue_from_json
from harness.errors import ConfigError, GitHubError

MODEL_SPEC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,199}$")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*/[A-Za-z0-9][A-Za-z0-9._-]*$")
STORE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
USAGE = "/harness solve [--samples N] [--model SPEC] [--max-usd X]"
# Option names a command may use -> the option (--budget-usd: the old name of --max-usd).
OPTIONS = {
    "--samples": "--samples",
    "--model": "--model",
    "--max-usd": "--max-usd",
    "--budget-usd": "--max-usd",
}


class CommandError(ConfigError):
    """A `/harness` command that does not parse or asks for something not allowed."""


@dataclass(frozen=True)
class SolveOptions:
    """What a trigger may tune; None = the solver's (or the workflow's) default."""

    samples: int | None = None
    model: str | None = None
    budget_usd: float | None = None

    def merged(self, override: SolveOptions) -> SolveOptions:
        """These options with every field `override` sets replaced."""
        changes = {k: v for k, v in vars(override).items() if v is not None}
        return replace(self, **changes)

    def describe(self) -> str:
        parts = []
        if self.samples is not None:
            parts.append(f"samples {self.samples}")
        if self.model is not None:
            parts.append(f"model `{self.model}`")
        if self.budget_usd is not None:
            parts.append(f"budget ${self.budget_usd:g}")
        return ", ".join(parts) or "default settings"


@dataclass(frozen=True)
class OptionLimits:
    """Caps on what a command may ask for (the workflow's own defaults are not capped).

    A comment picks a model only from `allowed_models` (empty: it picks none), and that list
    may hold no `script:` model and no local path: those run host code the comment chose.
    """

    max_samples: int = 16
    max_budget_usd: float = 20.0
    allowed_models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for spec in self.allowed_models:
            check_listed_model(spec)


def check_listed_model(spec: str) -> str:
    """A model spec fit for the allow-list: a hub id, a served model or a store name."""
    scheme, sep, rest = spec.partition(":")
    target = rest.partition("?")[0]  # options (gguf, base_url) are the workflow author's
    hint = "list hub models as hf:org/name, served ones as openai:name, or store names"
    if not MODEL_SPEC.match(spec) or ".." in spec:
        raise ConfigError(f"allowed model {spec!r} is not a model spec", hint=hint)
    if not sep:
        if not STORE_NAME.match(spec):
            raise ConfigError(f"allowed model {spec!r} is not a store name", hint=hint)
    elif scheme == "script":
        raise ConfigError(
            f"allowed model {spec!r}: a script: model runs a file on the host, so no comment "
            "may choose one",
            hint="set it as the workflow's own default model instead (--model)",
        )
    elif scheme == "hf" and not HUB_ID.match(target):
        raise ConfigError(
            f"allowed model {spec!r}: only a Hugging Face hub id (org/name) may be listed, "
            "never a local directory",
            hint=hint,
        )
    elif scheme not in ("hf", "openai") or not target:
        raise ConfigError(f"allowed model {spec!r} is not a model spec", hint=hint)
    return spec


@dataclass(frozen=True)
class Trigger:
    """A request to solve an issue, before the trust check."""

    kind: Literal["label", "comment"]
    repo: str  # owner/repo
    issue: Issue
    actor: str
    association: str | None  # the comment's author_association; None: look the labeler up
    key: str  # identifies this delivery, for idempotency
    options: SolveOptions = SolveOptions()
    problem: str | None = None  # answer this instead of solving (bad command, a PR ...)
    default_branch: str | None = None
    comment_id: int | None = None

    @property
    def owner(self) -> str:
        return self.repo.split("/")[0]


@dataclass(frozen=True)
class Ignored:
    reason: str


def parse_event(
    event_name: str,
    payload: Mapping[str, Any],
    *,
    label: str = "harness",
    limits: OptionLimits = OptionLimits(),
) -> Trigger | Ignored:
    """Decide what an `issues` / `issue_comment` payload asks for."""
    action = str(payload.get("action") or "")
    if event_name not in ("issues", "issue_comment"):
        return Ignored(f"event {event_name!r} is not handled (only issues, issue_comment)")
    try:
        repository = payload["repository"]
        repo = check_full_name(str(repository["full_name"]))
        issue_json = payload["issue"]
        issue = issue_from_json(issue_json)
        sender = payload.get("sender") or {}
    except (KeyError, TypeError, ValueError, GitHubError) as exc:
        raise ConfigError(f"malformed {event_name} event payload: {exc}") from exc
    default_branch = repository.get("default_branch")
    common: dict[str, Any] = {
        "repo": repo,
        "issue": issue,
        "default_branch": str(default_branch) if default_branch else None,
    }
    if event_name == "issues":
        if action != "labeled":
            return Ignored(f"issues.{action} is not handled (only labeled)")
        name = str((payload.get("label") or {}).get("name") or "")
        if name.lower() != label.lower():
            return Ignored(f"label {name!r} is not {label!r}")
        stamp = f"{name.lower()}|{issue_json.get('updated_at') or ''}"
        return Trigger(
            kind="label",
            actor=str(sender.get("login") or ""),
            association=None,
            key=f"label-{issue.number}-{hashlib.sha256(stamp.encode()).hexdigest()[:12]}",
            **common,
        )
    if action != "created":
        return Ignored(f"issue_comment.{action} is not handled (only created)")
    comment = payload.get("comment") or {}
    user = comment.get("user") or {}
    if str(user.get("type") or "") == "Bot":
        return Ignored("comments by bots are not commands")  # never answer ourselves
    line = find_command(str(comment.get("body") or ""))
    if line is None:
        return Ignored("the comment holds no /harness command")
    problem = None
    options = SolveOptions()
    try:
        options = parse_command(line, limits)
    except CommandError as exc:
        problem = exc.message
    if issue.is_pull_request and problem is None:
        problem = "harness works on issues; comment `/harness solve` on an issue, not a PR."
    return Trigger(
        kind="comment",
        actor=str(user.get("login") or ""),
        association=str(comment.get("author_association") or "NONE"),
        key=f"comment-{int(comment.get('id') or 0)}",
        options=options,
        problem=problem,
        comment_id=int(comment.get("id") or 0) or None,
        **common,
    )


def find_command(body: str) -> str | None:
    """The first line that starts with `/harness` (a word of its own), if any."""
    for line in body.splitlines():
        stripped = line.strip()
        if stripped == "/harness" or stripped.startswith(("/harness ", "/harness\t")):
            return stripped
    return None


def parse_command(line: str, limits: OptionLimits = OptionLimits()) -> SolveOptions:
    """`/harness solve [--samples N] [--model SPEC] [--max-usd X]` -> SolveOptions."""
    try:
        words = shlex.split(line, comments=False, posix=True)
    except ValueError as exc:
        raise CommandError(f"cannot parse the command ({exc}); usage: `{USAGE}`") from exc
    if len(words) < 2 or words[0] != "/harness" or words[1] != "solve":
        raise CommandError(f"unknown command; usage: `{USAGE}`")
    values: dict[str, str] = {}
    rest = words[2:]
    i = 0
    while i < len(rest):
        word = rest[i]
        given, eq, value = word.partition("=")
        if given not in OPTIONS:
            raise CommandError(f"unknown option `{_shown(word)}`; usage: `{USAGE}`")
        name = OPTIONS[given]
        if not eq:
            if i + 1 >= len(rest):
                raise CommandError(f"`{name}` needs a value; usage: `{USAGE}`")
            value = rest[i + 1]
            i += 1
        if name in values:
            raise CommandError(f"`{name}` is given twice")
        values[name] = value
        i += 1
    return SolveOptions(
        samples=_samples(values["--samples"], limits) if "--samples" in values else None,
        model=_model(values["--model"], limits) if "--model" in values else None,
        budget_usd=_budget(values["--max-usd"], limits) if "--max-usd" in values else None,
    )


def _shown(word: str) -> str:
    return word[:40].replace("`", "'")


def _samples(value: str, limits: OptionLimits) -> int:
    if not re.fullmatch(r"[0-9]{1,6}", value) or not 1 <= int(value) <= limits.max_samples:
        raise CommandError(f"--samples must be a whole number from 1 to {limits.max_samples}")
    return int(value)


def _model(value: str, limits: OptionLimits) -> str:
    if not MODEL_SPEC.match(value):
        raise CommandError(f"--model `{_shown(value)}` is not a model spec")
    if not limits.allowed_models:
        raise CommandError(
            "this repository's workflow lets no comment choose the model (`allowed-models` "
            "is empty); leave out `--model`"
        )
    if value not in limits.allowed_models:
        allowed = ", ".join(f"`{m}`" for m in limits.allowed_models)
        raise CommandError(f"--model `{value}` is not allowed here; allowed: {allowed}")
    return value  # OptionLimits checked every listed spec


def _budget(value: str, limits: OptionLimits) -> float:
    try:
        budget = float(value.removeprefix("$"))
    except ValueError:
        budget = math.nan
    if not math.isfinite(budget) or not 0 < budget <= limits.max_budget_usd:
        raise CommandError(
            f"--max-usd must be a number above 0 and at most {limits.max_budget_usd:g}"
        )
    return budget
