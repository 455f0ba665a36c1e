"""`harness eval ...`: solve and grade SWE-bench-style data sets, grade predictions, report."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from harness.cli.common import (
    cache_dir,
    conformal_alpha_option,
    draft_model_option,
    run,
    speculate_option,
    speculation_overrides,
)
from harness.errors import ConfigError

app = typer.Typer(
    help="Evaluate on SWE-bench-style data sets: solve + grade, grade predictions, report.",
    no_args_is_help=True,
)
err = Console(stderr=True)

# The solver `eval run` uses when --solver is not given: "module:callable", a zero-argument
# factory returning a harness.types.Solver. The real pipeline is wired in here.
DEFAULT_SOLVER: str | None = None
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")

DatasetOpt = typer.Option(None, "--dataset", help="Hub id or local .json/.jsonl/.parquet file.")
SplitOpt = typer.Option("test", help="Split of a hub data set.")
InstancesOpt = typer.Option(None, "--instances", help="Comma-separated instance ids.")
FilterOpt = typer.Option(None, "--filter", help="Regex the instance id must match.")
SliceOpt = typer.Option(None, "--slice", help="A:B slice of the selection.")
WorkersOpt = typer.Option(1, help="Instances in flight at once.")
ResumeOpt = typer.Option(False, "--resume", help="Continue a batch in OUT; skip what is done.")
MirrorOpt = typer.Option(
    None, "--git-mirror", help="Where repos live: a path or URL with {owner} and {name}."
)
ImagesOpt = typer.Option("local", help="local (build from specs) or official (pull swebench's).")
ExecutorOpt = typer.Option("local", help="local, or ray to fan out over a Ray cluster.")
RayOpt = typer.Option(None, "--ray-address", help="Ray cluster address (default: start one).")
SpecsOpt = typer.Option(None, "--specs", help="JSON/YAML env specs {repo: {version: spec}}.")
TimeoutOpt = typer.Option(1800.0, help="Seconds the tests of one instance may run.")
CaOpt = typer.Option(None, help="CA bundle for HTTPS inside image builds (TLS proxies).")
MemOpt = typer.Option(4096, help="Memory limit per grading sandbox, MiB.")
NetOpt = typer.Option(
    False, "--test-network", help="Let tests use the network (off by default; swebench's is on)."
)
RebuildOpt = typer.Option(
    False, "--rebuild-images", help="Rebuild env images from scratch (no reuse, no cache)."
)
AptOpt = typer.Option(
    None,
    "--apt-packages",
    help="Comma list of Debian packages in env images (default: "
    "what swebench's base image has; '' for none).",
)


@app.command("run")
def run_cmd(
    out: Path = typer.Option(..., "--out", help="Run directory (records, logs, report)."),
    dataset: str | None = DatasetOpt,
    split: str = SplitOpt,
    instances: str | None = InstancesOpt,
    filter_: str | None = FilterOpt,
    slice_: str | None = SliceOpt,
    workers: int = WorkersOpt,
    resume: bool = ResumeOpt,
    git_mirror: str | None = MirrorOpt,
    images: str = ImagesOpt,
    solver: str | None = typer.Option(
        None, help="module:factory returning a Solver (default: the harness pipeline)."
    ),
    model_name: str = typer.Option("harness", help="model_name_or_path in predictions."),
    executor: str = ExecutorOpt,
    ray_address: str | None = RayOpt,
    specs: list[Path] | None = SpecsOpt,
    timeout: float = TimeoutOpt,
    ca_bundle: Path | None = CaOpt,
    memory_mb: int = MemOpt,
    apt_packages: str | None = AptOpt,
    rebuild_images: bool = RebuildOpt,
    test_network: bool = NetOpt,
    include_hints: bool = typer.Option(False, "--include-hints", help="Give hints_text too."),
    config_file: Path | None = typer.Option(None, "--config", help="Solve config (YAML)."),
    overrides: list[str] = typer.Option([], "--set", "-c", help="Solve config key=value."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model spec for the solver."),
    samples: int | None = typer.Option(None, "--samples", "-n", help="Trajectories per task."),
    draft_model: str | None = draft_model_option(),
    speculate: int | None = speculate_option(),
    conformal_alpha: float | None = conformal_alpha_option(),
) -> None:
    """Solve every selected instance, write predictions as it goes, grade, report.

    The solver is the harness pipeline configured by --config / -c / --model / --samples
    (and the speculation flags), unless --solver names another factory.
    """
    from harness.evals.batch import Batch, prepare_out_dir

    args = _resume_args(out, resume, dataset, split, instances, filter_, slice_)
    spec = solver or DEFAULT_SOLVER
    spec_flags = speculation_overrides(draft_model, speculate, conformal_alpha)
    if spec:
        if solver and (config_file or overrides or model or samples is not None or spec_flags):
            raise ConfigError(
                "--config, -c, --model, --samples and the speculation flags configure the "
                "harness pipeline; --solver replaces it",
                hint="drop --solver, or configure that solver in its own factory",
            )
        factory = load_solver_factory(spec)
    else:
        extra = [f"model={model}"] * bool(model) + [f"samples={samples}"] * (samples is not None)
        extra += spec_flags
        factory, spec = _pipeline_factory(config_file, [*overrides, *extra])
    insts, unknown, meta = _select(out, args)
    config = _config(
        git_mirror,
        images,
        specs,
        timeout,
        ca_bundle,
        memory_mb,
        model_name,
        apt_packages,
        rebuild_images,
        test_network,
    )
    config = type(config)(**{**config.__dict__, "include_hints": include_hints})
    prepare_out_dir(out, resume=resume, meta={**meta, "kind": "run", "solver": spec})

    async def go() -> None:
        from harness.evals.executors import make_executor

        ex = make_executor(executor, config, factory, ray_address=ray_address, workers=workers)
        async with ex:
            with _progress("solving + grading") as progress:
                batch = Batch(out, ex, workers=workers, model=model_name, on_progress=progress)
                await batch.run(insts, unknown)

    run(go())
    _finish(out)


@app.command("grade")
def grade_cmd(
    predictions: Path | None = typer.Argument(None, help="Predictions .jsonl/.json file."),
    gold: bool = typer.Option(False, "--gold", help="Grade the reference patches instead."),
    out: Path | None = typer.Option(None, "--out", help="Output directory."),
    dataset: str | None = DatasetOpt,
    split: str = SplitOpt,
    instances: str | None = InstancesOpt,
    filter_: str | None = FilterOpt,
    slice_: str | None = SliceOpt,
    workers: int = WorkersOpt,
    resume: bool = ResumeOpt,
    git_mirror: str | None = MirrorOpt,
    images: str = ImagesOpt,
    executor: str = ExecutorOpt,
    ray_address: str | None = RayOpt,
    specs: list[Path] | None = SpecsOpt,
    timeout: float = TimeoutOpt,
    ca_bundle: Path | None = CaOpt,
    memory_mb: int = MemOpt,
    apt_packages: str | None = AptOpt,
    rebuild_images: bool = RebuildOpt,
    test_network: bool = NetOpt,
) -> None:
    """Grade predictions (instance_id, model_name_or_path, model_patch) or the gold patches."""
    from harness.evals.batch import Batch, prepare_out_dir
    from harness.evals.predictions import BadPrediction, Prediction, read_predictions

    if gold == (predictions is not None):
        raise ConfigError("give a PREDICTIONS file or --gold (not both)")
    if out is None:
        out = Path("gold-eval") if predictions is None else predictions.with_suffix(".eval")
    args = _resume_args(out, resume, dataset, split, instances, filter_, slice_)
    insts, unknown, meta = _select(out, args)
    bad: list[BadPrediction] = []
    if predictions is not None:
        preds, bad = read_predictions(predictions)
        chosen = {i.instance_id for i in insts}
        # Without an explicit selection, grade exactly what the predictions name.
        if not (instances or filter_ or slice_):
            unknown = []
        else:
            preds = [p for p in preds if p.instance_id in chosen]
    else:
        preds = [Prediction(i.instance_id, i.patch, "gold") for i in insts]
    if predictions is not None and not (instances or filter_ or slice_):
        meta["instances"] = [p.instance_id for p in preds]  # the denominator
    config = _config(
        git_mirror,
        images,
        specs,
        timeout,
        ca_bundle,
        memory_mb,
        "gold",
        apt_packages,
        rebuild_images,
        test_network,
    )
    source = str(predictions) if predictions else "gold"
    prepare_out_dir(out, resume=resume, meta={**meta, "kind": "grade", "predictions": source})

    async def go() -> None:
        from harness.evals.executors import make_executor

        ex = make_executor(executor, config, None, ray_address=ray_address, workers=workers)
        async with ex:
            with _progress("grading") as progress:
                batch = Batch(out, ex, workers=workers, on_progress=progress)
                await batch.grade(insts, preds, bad, unknown)

    run(go())
    _finish(out)


@app.command("validate")
def validate_cmd(
    out: Path = typer.Option(Path("validation"), "--out", help="Output directory."),
    dataset: str | None = DatasetOpt,
    split: str = SplitOpt,
    instances: str | None = InstancesOpt,
    filter_: str | None = FilterOpt,
    slice_: str | None = SliceOpt,
    per_version: int | None = typer.Option(
        None, "--per-version", help="At most N instances per (repo, version) (default: all)."
    ),
    workers: int = typer.Option(1, help="(repo, version) groups in flight at once."),
    resume: bool = typer.Option(
        False, "--resume", help="Add to OUT: skip what is recorded (any selection)."
    ),
    retry: bool = typer.Option(
        False, "--retry-failed", help="With --resume: grade again what could not run."
    ),
    prune_images: bool = typer.Option(
        False,
        "--prune-images",
        help="Remove a (repo, version)'s environment images once its instances are done.",
    ),
    doc: Path | None = typer.Option(
        None, "--doc", help="Also put the table between the validation markers of this file."
    ),
    git_mirror: str | None = MirrorOpt,
    images: str = ImagesOpt,
    executor: str = ExecutorOpt,
    ray_address: str | None = RayOpt,
    specs: list[Path] | None = SpecsOpt,
    timeout: float = TimeoutOpt,
    ca_bundle: Path | None = CaOpt,
    memory_mb: int = MemOpt,
    apt_packages: str | None = AptOpt,
    rebuild_images: bool = RebuildOpt,
    test_network: bool = NetOpt,
) -> None:
    """Grade every selected instance's gold patch and its empty patch (the tests on the
    unchanged base commit): gold must resolve, empty must not. Writes a per-repository
    table (OUT/validation.md, OUT/validation.json)."""
    import platform

    from harness.evals.validate import RECORDS, Validator, plan, read_checks, replace_section
    from harness.evals.validate import write_summary as write_validation

    if doc is not None and not doc.is_file():
        raise ConfigError(f"--doc {doc} does not exist", hint="pass an existing Markdown file")
    if (out / RECORDS).exists() and not resume:
        raise ConfigError(
            f"{out} already holds a validation",
            hint="pass --resume to add to it, or choose another directory",
        )
    args = _resume_args(out, False, dataset, split, instances, filter_, slice_)
    insts, unknown, _meta = _select(out, args)
    if unknown:
        raise ConfigError(f"not in the data set: {', '.join(unknown)}")
    groups = plan(insts, per_version)
    config = _config(
        git_mirror,
        images,
        specs,
        timeout,
        ca_bundle,
        memory_mb,
        "gold",
        apt_packages,
        rebuild_images,
        test_network,
    )
    out.mkdir(parents=True, exist_ok=True)

    async def go() -> None:
        from harness.evals.executors import make_executor

        ex = make_executor(executor, config, None, ray_address=ray_address, workers=workers)
        async with ex:
            validator = Validator(
                out, ex, workers=workers, prune=prune_images, retry=retry, on_progress=_say
            )
            await validator.run(groups)

    run(go())
    machine = {
        "platform": platform.platform(),
        "cores": os.cpu_count(),
        "load_average_1_5_15": os.getloadavg(),
        "images": images,
        "test_network": test_network,
    }
    table = write_validation(out, read_checks(out), machine)
    if doc is not None:
        replace_section(doc, table)
    typer.echo(table)
    typer.echo(f"records: {out / RECORDS}; table: {out / 'validation.md'}")


@app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(..., help="A run or grade output directory."),
) -> None:
    """Write report.md, plots/*.png and report.html into RUN_DIR and print the summary."""
    _finish(run_dir)


# ---- helpers --------------------------------------------------------------------------


def _pipeline_factory(config_file: Path | None, overrides: list[str]) -> tuple[Any, str]:
    """The harness pipeline as a zero-argument, picklable Solver factory (and its name)."""
    import functools

    from harness.cli.model import store_from_env
    from harness.config import load_config
    from harness.solver import make_pipeline_solver

    config = load_config(config_file, overrides)
    factory = functools.partial(
        make_pipeline_solver,
        config,
        cache_dir(),
        store_from_env().root,
        os.environ.get("OPENAI_API_KEY"),
    )
    return factory, f"harness pipeline ({config.model}, {config.samples} samples)"


def load_solver_factory(spec: str | None) -> Callable[[], Any]:
    """'package.module:callable' -> the callable (a zero-argument Solver factory)."""
    if not spec:
        raise ConfigError(
            "no solver is configured for `harness eval run`",
            hint="pass --solver package.module:factory (a callable returning a Solver)",
        )
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ConfigError(f"--solver {spec!r} is not 'module:callable'")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load the solver {spec!r}: {exc}") from exc
    if not callable(factory):
        raise ConfigError(f"--solver {spec!r} is not callable")
    return factory  # type: ignore[no-any-return]


def _resume_args(
    out: Path,
    resume: bool,
    dataset: str | None,
    split: str,
    instances: str | None,
    filter_: str | None,
    slice_: str | None,
) -> dict[str, Any]:
    """The data set and selection; on --resume without --dataset, those of run.json."""
    if dataset is None and resume and (out / "run.json").exists():
        saved = json.loads((out / "run.json").read_text())
        sel = saved.get("selection", {})
        lo, hi = (sel.get("slice") or [None, None])[:2]
        return {
            "dataset": saved["dataset"],
            "split": saved.get("split", "test"),
            "instances": ",".join(sel.get("ids") or []) or None,
            "filter": sel.get("filter"),
            "slice": None if lo is None and hi is None else f"{lo or ''}:{hi or ''}",
        }
    if dataset is None:
        raise ConfigError("--dataset is required", hint="a hub id or a local .jsonl file")
    return {
        "dataset": dataset,
        "split": split,
        "instances": instances,
        "filter": filter_,
        "slice": slice_,
    }


def _quiet_libraries() -> None:
    """swebench 4 calls logging.basicConfig(INFO) on import (so matplotlib and others log
    at INFO), and `datasets` draws progress bars: configure logging first, bars off."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(ImportError):
        import datasets

        datasets.disable_progress_bars()


def _select(out: Path, args: dict[str, Any]) -> tuple[list[Any], list[str], dict[str, Any]]:
    from harness.evals.dataset import Selection, load_instances, select

    _quiet_libraries()

    selection = Selection.parse(args["instances"], args["filter"], args["slice"])
    with err.status(f"loading {args['dataset']} ..."):
        every = load_instances(args["dataset"], split=args["split"])
    insts, unknown = select(every, selection)
    meta = {
        "dataset": args["dataset"],
        "split": args["split"],
        "selection": selection.describe(),
        "instances": [i.instance_id for i in insts],
        "title": out.name,
    }
    return insts, unknown, meta


def _config(
    git_mirror: str | None,
    images: str,
    specs: list[Path] | None,
    timeout: float,
    ca_bundle: Path | None,
    memory_mb: int,
    model: str,
    apt_packages: str | None,
    rebuild: bool,
    network: bool,
) -> Any:
    from harness.evals.envimages import SWEBENCH_APT, EnvOptions
    from harness.evals.grading import GradeOptions
    from harness.evals.specs import SpecRegistry
    from harness.evals.worker import EvalConfig
    from harness.sandboxes import Limits

    if images not in ("local", "official"):
        raise ConfigError(f"--images {images!r}: choose local or official")
    registry = SpecRegistry()
    for path in specs or []:
        registry.load_file(path)
    if ca_bundle is None:
        env_ca = os.environ.get("HARNESS_CA_BUNDLE")
        ca_bundle = Path(env_ca) if env_ca else (HOST_CA if HOST_CA.is_file() else None)
    apt = (
        SWEBENCH_APT
        if apt_packages is None
        else tuple(p.strip() for p in apt_packages.split(",") if p.strip())
    )
    return EvalConfig(
        cache_dir=cache_dir(),
        git_mirror=git_mirror or os.environ.get("HARNESS_GIT_MIRROR"),
        env=EnvOptions(mode=images, ca_bundle=ca_bundle, apt_packages=apt, rebuild=rebuild),  # type: ignore[arg-type]
        grade=GradeOptions(
            timeout_s=timeout, limits=Limits(cpus=2.0, memory_mb=memory_mb), network=network
        ),
        specs=registry,
        model=model,
    )


class _progress:
    """A rich progress bar on a terminal, one line per finished instance otherwise."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Progress | None = None
        self.task: Any = None

    def __enter__(self) -> Callable[[Any], None]:
        if err.is_terminal:
            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[stats]}"),
                console=err,
            )
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=None, stats="")
        return self.update

    def update(self, p: Any) -> None:
        stats = (
            f"resolved {p.resolved}/{p.done} · covered {p.covered} · "
            f"{p.tokens:,} tok · ${p.cost_usd:.2f}"
        )
        if self.bar is not None:
            self.bar.update(self.task, total=p.total, completed=p.done, stats=stats)
        else:
            err.print(f"[{p.done}/{p.total}] {p.last} | {stats}", markup=False, highlight=False)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _say(line: str) -> None:
    err.print(line, markup=False, highlight=False)


def _finish(out: Path) -> None:
    _quiet_libraries()
    from harness.evals.render import write_report
    from harness.evals.report import load_report

    report = load_report(out)
    paths = write_report(report, out)
    acc = report.selection_accuracy
    typer.echo(
        f"resolved {report.resolved}/{report.total} ({100 * report.rate(report.resolved):.1f}%)"
        f" · coverage {report.covered}/{report.total}"
        f" · selection accuracy {'n/a' if acc is None else f'{100 * acc:.1f}%'}"
        f" · statuses {json.dumps(report.statuses)}"
    )
    typer.echo(f"report: {paths['markdown']} {paths['html']}")
