"""Render the Jinja prompt templates in agent/prompts/."""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("harness.agent", "prompts"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # prompts are plain text, not HTML
    )


def render(name: str, **values: Any) -> str:
    return _env().get_template(f"{name}.j2").render(**values).strip() + "\n"
