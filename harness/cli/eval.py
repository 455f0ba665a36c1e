"""`harness eval ...`: solve and grade SWE-bench-style data sets, grade predictions, report."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

from harness.cli.common import ca_bundle, cache_dir, load_config, local_backend_warning, run
from harness.cli.options import (
    PipelineFlags,
    backend_option,
    base_url_option,
    comma_list,
    config_option,
    conformal_alpha_option,
    draft_model_option,
    hidden_option,
    max_tokens_option,
    max_usd_option,
    model_option,
    out_option,
    renamed,
    resume_option,
    samples_option,
    set_option,
    solver_option,
    speculate_option,
    warn,
)
from harness.errors import ConfigError
from harness.report import dollars

if TYPE_CHECKING:
    from harness.config import Config
    from harness.evals.worker import EvalConfig

app = typer.Typer(
    help="Evaluate on SWE-bench-style data sets: solve + grade, grade predictions, report.",
    no_args_is_help=True,
)
err = Console(stderr=True)
RESUME_SWITCH = "--resume-out"  # what the old `--resume` switch becomes (legacy_resume_switch)

# Options of every eval command. Those without a default of their own (None) fall back to the
# config file's `eval:` section, then to its defaults (harness/config.py, EvalSettings).
DatasetOpt = typer.Option(None, "--dataset", help="Hub id or local .json/.jsonl/.parquet file.")
SplitOpt = typer.Option("test", help="Split of a hub data set.")
InstancesOpt = typer.Option(None, "--instances", help="Comma-separated instance ids.")
FilterOpt = typer.Option(
    None, "--filter", metavar="REGEX", help="Regex the instance id must match."
)
SliceOpt = typer.Option(None, "--slice", metavar="A:B", help="A:B slice of the selection.")
WorkersOpt = typer.Option(None, "--workers", metavar="N", help="Instances in flight (default 1).")
ResumeSwitchOpt = typer.Option(False, RESUME_SWITCH, hidden=True)
MirrorOpt = typer.Option(
    None, "--git-mirror", help="Where repos live: a path or URL with {owner} and {name}."
)
ImagesOpt = typer.Option(
    None, "--images", help="local (build from specs, the default) or official (pull swebench's)."
)
ExecutorOpt = typer.Option(
    None, "--executor", help="local (the default), or ray to fan out over a Ray cluster."
)
RayOpt = typer.Option(None, "--ray-address", help="Ray cluster address (default: start one).")
SpecsOpt = typer.Option(None, "--specs", help="JSON/YAML env specs {repo: {version: spec}}.")
TestTimeoutOpt = typer.Option(
    None,
    "--test-timeout",
    metavar="SECONDS",
    help="Seconds the tests of one instance may run (default 1800).",
)
CaOpt = typer.Option(
    None,
    "--ca-bundle",
    help="CA bundle for HTTPS inside image builds (default: $HARNESS_CA_BUNDLE, else the host's).",
)
MemOpt = typer.Option(
    None, "--test-memory-mb", metavar="MIB", help="Memory of one grading sandbox (default 4096)."
)
NetOpt = typer.Option(
    None,
    "--test-network/--no-test-network",
    help="Let the graded tests use the network (off by default; swebench's is on).",
)
RebuildOpt = typer.Option(
    None, "--rebuild-images", help="Rebuild env images from scratch (no reuse, no cache)."
)
AptOpt = typer.Option(
    None,
    "--apt-packages",
    help="Comma list of Debian packages in env images (default: "
    "what swebench's base image has; '' for none).",
)


@dataclass(frozen=True)
class EvalFlags:
    """The flags of the `eval:` config section, as given (None: not given)."""

    git_mirror: str | None = None
    specs: list[Path] | None = None
    images: str | None = None
    ca_bundle: Path | None = None
    apt_packages: str | None = None
    rebuild_images: bool | None = None
    test_timeout: float | None = None
    test_memory_mb: int | None = None
    test_network: bool | None = None
    workers: int | None = None
    executor: str | None = None
    ray_address: str | None = None
    model_name: str | None = None
    include_hints: bool | None = None

    def keys(self) -> dict[str, Any]:
        return {
            "eval.git_mirror": self.git_mirror,
            "eval.specs": tuple(self.specs) if self.specs else None,
            "eval.images": self.images,
            "eval.ca_bundle": self.ca_bundle,
            "eval.apt_packages": comma_list(self.apt_packages),
            "eval.rebuild_images": self.rebuild_images or None,
            "eval.test_timeout": self.test_timeout,
            "eval.test_memory_mb": self.test_memory_mb,
            "eval.test_network": self.test_network,
            "eval.workers": self.workers,
            "eval.executor": self.executor,
            "eval.ray_address": self.ray_address,
            "eval.model_name": self.model_name,
            "eval.include_hints": self.include_hints or None,
        }


@app.command("run")
def run_cmd(
    out: Path | None = out_option("Run directory (records, logs, report)."),
    resume: Path | None = resume_option("Continue the batch in DIR; skip what is done."),
    dataset: str | None = DatasetOpt,
    split: str = SplitOpt,
    instances: str | None = InstancesOpt,
    filter_: str | None = FilterOpt,
    slice_: str | None = SliceOpt,
    solver: str | None = solver_option(),
    config_file: Path | None = config_option(),
    overrides: list[str] = set_option(),
    model: str | None = model_option(),
    base_url: str | None = base_url_option(),
    samples: int | None = samples_option(),
    backend: str | None = backend_option(),
    max_usd: float | None = max_usd_option(),
    max_tokens: int | None = max_tokens_option(),
    draft_model: str | None = draft_model_option(),
    speculate: int | None = speculate_option(),
    conformal_alpha: float | None = conformal_alpha_option(),
    workers: int | None = WorkersOpt,
    executor: str | None = ExecutorOpt,
    ray_address: str | None = RayOpt,
    git_mirror: str | None = MirrorOpt,
    images: str | None = ImagesOpt,
    specs: list[Path] | None = SpecsOpt,
    test_timeout: float | None = TestTimeoutOpt,
    test_memory_mb: int | None = MemOpt,
    test_network: bool | None = NetOpt,
    ca_bundle_: Path | None = CaOpt,
    apt_packages: str | None = AptOpt,
    rebuild_images: bool | None = RebuildOpt,
    model_name: str | None = typer.Option(
        None, "--model-name", help="model_name_or_path in predictions (default: harness)."
    ),
    include_hints: bool | None = typer.Option(
        None, "--include-hints", help="Give the solver hints_text too."
    ),
    resume_switch: bool = ResumeSwitchOpt,
    timeout_old: float | None = hidden_option("--timeout"),
    memory_old: int | None = hidden_option("--memory-mb"),
) -> None:
    """Solve every selected instance, write predictions as it goes, grade, report.

    The solver is the harness pipeline configured by --config / -c and the pipeline flags
    (--model, --samples, --max-usd, ...); --solver names another factory, which gets the same
    config.
    """
    from harness.cli.solvers import describe, solver_factory
    from harness.evals.batch import Batch, prepare_out_dir

    out, resuming = _out_dir(out, resume, resume_switch)
    eval_flags = EvalFlags(
        git_mirror,
        specs,
        images,
        ca_bundle_,
        apt_packages,
        rebuild_images,
        renamed(test_timeout, timeout_old, "--timeout", "--test-timeout"),
        renamed(test_memory_mb, memory_old, "--memory-mb", "--test-memory-mb"),
        test_network,
        workers,
        executor,
        ray_address,
        model_name,
        include_hints,
    )
    pipeline = PipelineFlags(
        model, base_url, samples, backend, max_usd, max_tokens, draft_model, speculate,
        conformal_alpha,
    )  # fmt: skip
    cfg = load_config(config_file, overrides, {**pipeline.keys(), **eval_flags.keys()})
    factory = solver_factory(solver)
    local_backend_warning(cfg.solve.sandbox.backend)  # as soon as it is chosen, as solve does
    args = _resume_args(out, resuming, dataset, split, instances, filter_, slice_)
    insts, unknown, meta = _select(out, args)
    config = eval_config(cfg)
    meta = {**meta, "kind": "run", "solver": describe(solver, cfg.solve)}
    prepare_out_dir(out, resume=resuming, meta=meta)
    # Said as the run starts, once the input is known good (as solve does).
    if solver is None:
        _embedded_model_note(cfg)
    settings = cfg.eval

    async def go() -> None:
        from harness.evals.executors import make_executor

        # The worker builds its solver itself (on a Ray node too): a zero-argument factory.
        job_factory = functools.partial(factory, cfg.solve)
        ex = make_executor(
            settings.executor,
            config,
            job_factory,
            ray_address=settings.ray_address,
            workers=settings.workers,
        )
        async with ex:
            with _progress("solving + grading") as progress:
                batch = Batch(
                    out, ex, workers=settings.workers, model=settings.model_name,
                    on_progress=progress,
                )  # fmt: skip
                await batch.run(insts, unknown)

    run(go())
    _finish(out)


@app.command("grade")
def grade_cmd(
    predictions: Path | None = typer.Argument(None, help="Predictions .jsonl/.json file."),
    gold: bool = typer.Option(False, "--gold", help="Grade the reference patches instead."),
    out: Path | None = out_option("Output directory (default: PREDICTIONS.eval, or gold-eval)."),
    resume: Path | None = resume_option("Continue the grading in DIR; skip what is done."),
    dataset: str | None = DatasetOpt,
    split: str = SplitOpt,
    instances: str | None = InstancesOpt,
    filter_: str | None = FilterOpt,
    slice_: str | None = SliceOpt,
    config_file: Path | None = config_option(),
    overrides: list[str] = set_option(),
    workers: int | None = WorkersOpt,
    executor: str | None = ExecutorOpt,
    ray_address: str | None = RayOpt,
    git_mirror: str | None = MirrorOpt,
    images: str | None = ImagesOpt,
    specs: list[Path] | None = SpecsOpt,
    test_timeout: float | None = TestTimeoutOpt,
    test_memory_mb: int | None = MemOpt,
    test_network: bool | None = NetOpt,
    ca_bundle_: Path | None = CaOpt,
    apt_packages: str | None = AptOpt,
    rebuild_images: bool | None = RebuildOpt,
    resume_switch: bool = ResumeSwitchOpt,
    timeout_old: float | None = hidden_option("--timeout"),
    memory_old: int | None = hidden_option("--memory-mb"),
) -> None:
    """Grade predictions (instance_id, model_name_or_path, model_patch) or the gold patches."""
    from harness.evals.batch import Batch, prepare_out_dir
    from harness.evals.predictions import BadPrediction, Prediction, read_predictions

    if gold == (predictions is not None):
        raise ConfigError("give a PREDICTIONS file or --gold (not both)")
    if out is None and resume is None:
        out = Path("gold-eval") if predictions is None else predictions.with_suffix(".eval")
    out, resuming = _out_dir(out, resume, resume_switch)
    eval_flags = EvalFlags(
        git_mirror,
        specs,
        images,
        ca_bundle_,
        apt_packages,
        rebuild_images,
        renamed(test_timeout, timeout_old, "--timeout", "--test-timeout"),
        renamed(test_memory_mb, memory_old, "--memory-mb", "--test-memory-mb"),
        test_network,
        workers,
        executor,
        ray_address,
        model_name="gold",
    )
    cfg = load_config(config_file, overrides, eval_flags.keys())
    args = _resume_args(out, resuming, dataset, split, instances, filter_, slice_)
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
    config = eval_config(cfg)
    source = str(predictions) if predictions else "gold"
    prepare_out_dir(out, resume=resuming, meta={**meta, "kind": "grade", "predictions": source})
    settings = cfg.eval

    async def go() -> None:
        from harness.evals.executors import make_executor

        ex = make_executor(
            settings.executor, config, None, ray_address=settings.ray_address,
            workers=settings.workers,
        )  # fmt: skip
        async with ex:
            with _progress("grading") as progress:
                batch = Batch(out, ex, workers=settings.workers, on_progress=progress)
                await batch.grade(insts, preds, bad, unknown)

    run(go())
    _finish(out)


@app.command("validate")
def validate_cmd(
    out: Path | None = out_option("Output directory (default: validation)."),
    resume: Path | None = resume_option("Add to the validation in DIR (any selection)."),
    dataset: str | None = DatasetOpt,
    split: str = SplitOpt,
    instances: str | None = InstancesOpt,
    filter_: str | None = FilterOpt,
    slice_: str | None = SliceOpt,
    per_version: int | None = typer.Option(
        None, "--per-version", help="At most N instances per (repo, version) (default: all)."
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
    config_file: Path | None = config_option(),
    overrides: list[str] = set_option(),
    workers: int | None = typer.Option(
        None, "--workers", metavar="N", help="(repo, version) groups in flight (default 1)."
    ),
    executor: str | None = ExecutorOpt,
    ray_address: str | None = RayOpt,
    git_mirror: str | None = MirrorOpt,
    images: str | None = ImagesOpt,
    specs: list[Path] | None = SpecsOpt,
    test_timeout: float | None = TestTimeoutOpt,
    test_memory_mb: int | None = MemOpt,
    test_network: bool | None = NetOpt,
    ca_bundle_: Path | None = CaOpt,
    apt_packages: str | None = AptOpt,
    rebuild_images: bool | None = RebuildOpt,
    resume_switch: bool = ResumeSwitchOpt,
) -> None:
    """Grade every selected instance's gold patch and its empty patch (the tests on the
    unchanged base commit): gold must resolve, empty must not. Writes a per-repository
    table (OUT/validation.md, OUT/validation.json)."""
    import os
    import platform

    from harness.evals.validate import RECORDS, Validator, plan, read_checks, replace_section
    from harness.evals.validate import write_summary as write_validation

    if doc is not None and not doc.is_file():
        raise ConfigError(f"--doc {doc} does not exist", hint="pass an existing Markdown file")
    if out is None and resume is None and not resume_switch:
        out = Path("validation")
    out, resuming = _out_dir(out, resume, resume_switch)
    if (out / RECORDS).exists() and not resuming:
        raise ConfigError(
            f"{out} already holds a validation",
            hint=f"pass --resume {out} to add to it, or choose another directory",
        )
    eval_flags = EvalFlags(
        git_mirror,
        specs,
        images,
        ca_bundle_,
        apt_packages,
        rebuild_images,
        test_timeout,
        test_memory_mb,
        test_network,
        workers,
        executor,
        ray_address,
        model_name="gold",
    )
    cfg = load_config(config_file, overrides, eval_flags.keys())
    args = _resume_args(out, False, dataset, split, instances, filter_, slice_)
    insts, unknown, _meta = _select(out, args)
    if unknown:
        raise ConfigError(f"not in the data set: {', '.join(unknown)}")
    groups = plan(insts, per_version)
    config = eval_config(cfg)
    settings = cfg.eval
    out.mkdir(parents=True, exist_ok=True)

    async def go() -> None:
        from harness.evals.executors import make_executor

        ex = make_executor(
            settings.executor, config, None, ray_address=settings.ray_address,
            workers=settings.workers,
        )  # fmt: skip
        async with ex:
            validator = Validator(
                out,
                ex,
                workers=settings.workers,
                prune=prune_images,
                retry=retry,
                on_progress=_say,
            )
            await validator.run(groups)

    run(go())
    machine = {
        "platform": platform.platform(),
        "cores": os.cpu_count(),
        "load_average_1_5_15": os.getloadavg(),
        "images": settings.images,
        "test_network": settings.test_network,
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


def legacy_resume_switch(argv: list[str]) -> list[str]:
    """`harness eval ... --resume` with no directory after it (the old switch: continue in
    --out) still works for one release: it becomes a hidden flag, which warns."""
    if not argv or argv[0] != "eval":
        return argv
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--resume" and (i + 1 == len(args) or args[i + 1].startswith("-")):
            args[i] = RESUME_SWITCH
    return args


def _out_dir(out: Path | None, resume: Path | None, switch: bool) -> tuple[Path, bool]:
    """(the output directory, whether to resume it) from --out, --resume DIR and the old
    `--out DIR --resume`."""
    if switch:
        warn("--resume without a directory is deprecated and goes in the next release; "
             "use --resume DIR")  # fmt: skip
        if out is None:
            raise ConfigError("--resume needs the directory to continue", hint="--resume DIR")
        return out, True
    if resume is not None:
        if out is not None and out.resolve() != resume.resolve():
            raise ConfigError(
                f"--out {out} and --resume {resume} name different directories",
                hint="give only --resume DIR to continue a run",
            )
        return resume, True
    if out is None:
        raise ConfigError("no output directory", hint="pass --out DIR (or --resume DIR)")
    return out, False


def eval_config(cfg: Config) -> EvalConfig:
    """The workers' config, built once from the loaded config (and the host's CA bundle)."""
    from harness.evals.envimages import SWEBENCH_APT, EnvOptions
    from harness.evals.grading import GradeOptions
    from harness.evals.specs import SpecRegistry
    from harness.evals.worker import EvalConfig
    from harness.sandboxes import Limits

    settings = cfg.eval
    registry = SpecRegistry()
    for path in settings.specs:
        registry.load_file(path)
    env = EnvOptions(
        mode=settings.images,  # type: ignore[arg-type]  # checked when the config loaded
        ca_bundle=ca_bundle(settings.ca_bundle),
        apt_packages=SWEBENCH_APT if settings.apt_packages is None else settings.apt_packages,
        rebuild=settings.rebuild_images,
    )
    grade = GradeOptions(
        timeout_s=settings.test_timeout,
        limits=Limits(cpus=2.0, memory_mb=settings.test_memory_mb),
        network=settings.test_network,
    )
    return EvalConfig(
        cache_dir=cache_dir(),
        git_mirror=settings.git_mirror,
        env=env,
        grade=grade,
        specs=registry,
        model=settings.model_name,
        include_hints=settings.include_hints,
    )


def _embedded_model_note(cfg: Config) -> None:
    from harness.cli.solve import embedded_model_note

    embedded_model_note(cfg.solve.model)


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
            f"{p.tokens:,} tok · {dollars(p.cost_usd, p.unpriced, places=2)}"
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
