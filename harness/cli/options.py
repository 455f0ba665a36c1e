"""The options several commands share, declared once so that a concept has one name everywhere,
and the old names kept for one release as hidden aliases that print a warning."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from harness.errors import ConfigError

T = TypeVar("T")
err = Console(stderr=True)

DRAFT_MODEL_HELP = (
    "Drafter for speculative decoding of in-process models: suffix (the default: drafts "
    "copied from earlier text of the prompt, the output and the program's earlier turns; "
    "no model), a model spec sharing the target's tokenizer, self / self:L (the target's "
    "first L layers; default a quarter), or none."
)
SPECULATE_HELP = (
    "Token-level speculative decoding: up to K draft tokens per round, verified by the target "
    "in one pass (exact: greedy output unchanged, sampled output distributed as the "
    "target's); 0 turns it off."
)
CONFORMAL_ALPHA_HELP = (
    "Step-level speculation (ATTS): the draft writes each step, the target scores it and "
    "rewrites the worst ~A of them (split-conformal threshold; A in (0, 1])."
)
SOLVER_HELP = (
    "A callable, module:factory, that takes the run's SolveConfig (--config, -c and the "
    "flags) and returns a harness.types.Solver (default: the harness pipeline)."
)


def config_option() -> Any:
    return typer.Option(
        None,
        "--config",
        metavar="FILE",
        help="YAML config: the solve config at the top level, eval:, serve:, bot: sections.",
    )


def set_option() -> Any:
    return typer.Option(
        [], "--set", "-c", metavar="KEY=VALUE", help="Config override, e.g. -c editing.max_turns=4."
    )


def model_option(help: str = "Model spec (default: smollm2-135m, the embedded model).") -> Any:
    return typer.Option(None, "--model", "-m", metavar="SPEC", help=help)


def base_url_option() -> Any:
    return typer.Option(
        None,
        "--base-url",
        metavar="URL",
        help="Server of openai: model specs (default: $OPENAI_BASE_URL, else OpenAI's).",
    )


def samples_option() -> Any:
    return typer.Option(None, "--samples", "-n", metavar="N", help="Trajectories per task.")


def backend_option(help: str = "Sandbox backend: docker (default), bwrap, local.") -> Any:
    return typer.Option(None, "--backend", metavar="NAME", help=help)


def max_usd_option() -> Any:
    return typer.Option(
        None, "--max-usd", metavar="USD", help="Dollar budget of one task's model calls."
    )


def max_tokens_option() -> Any:
    return typer.Option(
        None, "--max-tokens", metavar="N", help="Token budget of one task's model calls."
    )


def draft_model_option() -> Any:
    return typer.Option(None, "--draft-model", metavar="SPEC", help=DRAFT_MODEL_HELP)


def speculate_option() -> Any:
    return typer.Option(None, "--speculate", min=0, metavar="K", help=SPECULATE_HELP)


def conformal_alpha_option() -> Any:
    return typer.Option(None, "--conformal-alpha", metavar="A", help=CONFORMAL_ALPHA_HELP)


def solver_option() -> Any:
    return typer.Option(None, "--solver", metavar="MODULE:FACTORY", help=SOLVER_HELP)


def out_option(help: str) -> Any:
    return typer.Option(None, "--out", "-o", metavar="DIR", help=help)


def resume_option(help: str) -> Any:
    return typer.Option(None, "--resume", metavar="DIR", help=help)


def hidden_option(name: str) -> Any:
    """An old spelling, accepted for one release (see `renamed`)."""
    return typer.Option(None, name, hidden=True)


@dataclass(frozen=True)
class PipelineFlags:
    """The flags that configure the solve pipeline, the same on solve, eval run and bot."""

    model: str | None = None
    base_url: str | None = None
    samples: int | None = None
    backend: str | None = None
    max_usd: float | None = None
    max_tokens: int | None = None
    draft_model: str | None = None
    speculate: int | None = None
    conformal_alpha: float | None = None

    def keys(self) -> dict[str, Any]:
        """Config key -> value (None: not given)."""
        return {
            "model": self.model,
            "base_url": self.base_url,
            "samples": self.samples,
            "sandbox.backend": self.backend,
            "budget.max_usd": self.max_usd,
            "budget.max_tokens": self.max_tokens,
            "engine.draft_model": self.draft_model,
            "engine.speculate": self.speculate,
            "engine.conformal_alpha": self.conformal_alpha,
        }


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def renamed(new: T | None, old: T | None, old_name: str, new_name: str) -> T | None:
    """The value of option `new_name`, or of its old spelling `old_name` (with a warning)."""
    if old is None or old == []:
        return new
    if new is not None and new != [] and new != old:
        raise ConfigError(
            f"{old_name} and {new_name} are the same option, given different values",
            hint=f"give only {new_name} ({old_name} is its old name)",
        )
    warn(f"{old_name} is deprecated and goes in the next release; use {new_name}")
    return old


def comma_list(text: str | None) -> tuple[str, ...] | None:
    """`a, b,c` -> ('a', 'b', 'c'); '' -> (); None -> None (not given)."""
    if text is None:
        return None
    return tuple(part.strip() for part in text.split(",") if part.strip())


def existing_dir(path: Path, flag: str) -> Path:
    if not path.is_dir():
        raise ConfigError(
            f"{flag} {path} is not a directory",
            hint=f"pass the directory an earlier run wrote to {flag}",
        )
    return path
