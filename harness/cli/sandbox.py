"""`harness sandbox ...`: run a command exactly as a trajectory would, build images, prune."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from harness.cli.common import cache_dir, local_backend_warning, run
from harness.sandboxes import BACKENDS, Limits, SandboxSpec, make_backend

app = typer.Typer(
    help="Sandboxes: run commands in isolation, build the base image, clean up.",
    no_args_is_help=True,
)
err = Console(stderr=True)


@app.command(
    "exec",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def exec_(
    ctx: typer.Context,
    backend: str = typer.Option("docker", help=f"One of: {', '.join(BACKENDS)}."),
    repo: Path | None = typer.Option(None, help="Git repository to check out (default: none)."),
    commit: str = typer.Option("HEAD", help="Revision of --repo to check out."),
    image: str | None = typer.Option(None, help="Image (docker) or root directory (bwrap)."),
    timeout: float = typer.Option(600.0, help="Seconds before the command is killed."),
    network: bool = typer.Option(False, "--network", help="Allow network access."),
    workdir: str = typer.Option("/testbed", help="Where the work tree is inside the sandbox."),
    memory_mb: int = typer.Option(4096, help="Memory limit in MiB."),
    cpus: float = typer.Option(2.0, help="CPU limit."),
    ca_bundle: Path | None = typer.Option(None, help="Extra CA bundle for HTTPS (TLS proxies)."),
) -> None:
    """Run CMD (after `--`) in a fresh sandbox; exit with its code, or 124 on timeout."""
    cmd = list(ctx.args)
    if not cmd:
        raise typer.BadParameter("give a command after `--`, e.g. `-- python -V`")
    local_backend_warning(backend)
    spec = SandboxSpec(
        repo=repo,
        commit=commit,
        image=image,
        workdir=workdir,
        network=network,
        limits=Limits(cpus=cpus, memory_mb=memory_mb),
        ca_bundle=ca_bundle,
        default_timeout=timeout,
    )
    code = run(_exec(backend, spec, cmd))
    raise typer.Exit(code)


async def _exec(backend_name: str, spec: SandboxSpec, cmd: list[str]) -> int:
    def show(stream: str, chunk: bytes) -> None:
        out = sys.stdout if stream == "stdout" else sys.stderr
        out.buffer.write(chunk)
        out.flush()

    # One argument holding spaces is a shell command line; several are an argv.
    argv = ["bash", "-c", cmd[0]] if len(cmd) == 1 and " " in cmd[0] else cmd
    async with make_backend(backend_name, cache_dir()) as backend:
        box = await backend.open(spec)
        async with box:
            result = await box.exec(argv, on_output=show)
    if result.timed_out:
        err.print(f"[yellow]harness: timed out after {spec.default_timeout:g} s[/]")
        return 124
    return int(result.exit_code)


@app.command("build-base")
def build_base(
    tag: str = typer.Option("harness-base:latest", help="Tag of the image to build."),
    suite: str = typer.Option("bookworm", help="Debian suite (bullseye, bookworm, trixie)."),
    mirror: str = typer.Option("http://deb.debian.org/debian", help="Debian mirror."),
    ca_bundle: Path | None = typer.Option(
        None, help="CA bundle to trust inside the image (TLS-intercepting proxies)."
    ),
    rebuild: bool = typer.Option(False, "--rebuild", help="Build even if a cached one exists."),
) -> None:
    """Build (or reuse) the base image: registry pull if possible, else debootstrap."""
    from harness.sandboxes.docker import connect
    from harness.sandboxes.images import BaseImageRecipe
    from harness.sandboxes.images import build_base as build

    recipe = BaseImageRecipe(tag=tag, suite=suite, mirror=mirror, ca_bundle=ca_bundle)
    client = connect()
    image_id = run(
        build(
            client,
            recipe,
            rebuild=rebuild,
            log=lambda s: err.print(s, markup=False, highlight=False),
        )
    )
    typer.echo(f"{tag} {image_id}")


@app.command("prune")
def prune(
    all_: bool = typer.Option(
        False, "--all", help="Also remove sandboxes of running processes (any host's)."
    ),
    images: bool = typer.Option(False, "--images", help="Also remove cached snapshot images."),
    label: str | None = typer.Option(
        None, help="Only sandboxes that also carry this KEY=VALUE label (no host directories)."
    ),
) -> None:
    """Remove sandboxes and temp directories left behind by crashed or killed runs.

    A sandbox whose owner still runs is kept, on this host or any other sharing the engine.
    """
    import tempfile

    from harness.sandboxes.docker import connect
    from harness.sandboxes.prune import prune as do_prune
    from harness.sandboxes.prune import prune_host

    if label is not None and "=" not in label:
        raise typer.BadParameter(f"{label!r} is not KEY=VALUE", param_hint="--label")
    removed = do_prune(connect(), everything=all_, images=images, label=label)
    if label is None:  # host directories carry no labels: only an unnarrowed prune takes them
        tmp_dirs = {Path(tempfile.gettempdir()), Path("/dev/shm")}
        removed += prune_host(cache_dir(), sorted(tmp_dirs))
    for line in removed:
        typer.echo(f"removed {line}")
    typer.echo(f"{len(removed)} removed")
