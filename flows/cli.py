"""The `diffpath` command line: fit-reference, screen, audit, evaluate, benchmark, train, demo.

Every command runs its Prefect flow in-process (ephemeral mode, no server needed).
Exit codes: 0 ok, 1 failures (unreadable source, missing model), 2 bad arguments or
mismatched configs, 3 a run that alerts: a screening over its limits, a benchmark that
regressed (outputs written); the last line
printed says why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

import diffpath
from diffpath.config import (
    DEFAULT_UNET_CHANNELS,
    FeatureConfig,
)
from diffpath.errors import AlertError, ConfigError, DiffPathError
from diffpath_flows.options import DEBUG, RUN_OPTIONS, console, exit_with_reason, with_options
from diffpath_flows.run import RunOptions

# Flows, Prefect and torch are imported inside the commands: `--help` stays fast.

ALERT_EXIT = 3
app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)


def _version(show: bool) -> None:
    if show:
        typer.echo(f"diffpath {diffpath.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version"),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show full tracebacks")] = False,
) -> None:
    """diffpath: zero-shot image OOD screening with a pretrained diffusion model."""
    DEBUG["on"] = debug


class _OneLine(logging.Formatter):
    """Wraps a console formatter so that log records print without their tracebacks."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def _said_by_the_cli(record: logging.LogRecord) -> bool:
    """Records the console leaves out: a run's failure (the CLI prints its reason once, as
    its last line) and the event queue's drain notices at exit."""
    failed_run = record.levelno >= logging.ERROR and record.name in RUN_LOGGERS
    return failed_run or record.getMessage().startswith("Still processing items")


RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


def _quiet_console() -> None:
    """Without --debug the console shows progress bars and warnings, one line each, and a
    failure once, as our one-line reason (Prefect's run logs keep everything)."""
    from prefect.logging.configuration import setup_logging

    setup_logging()
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)
        if handler.formatter is not None and not isinstance(handler.formatter, _OneLine):
            handler.setFormatter(_OneLine(handler.formatter))
            handler.addFilter(lambda record: not _said_by_the_cli(record))


DEFAULT_CHANNELS = ",".join(map(str, DEFAULT_UNET_CHANNELS))
SAMPLES = Path(__file__).resolve().parents[1] / "diffpath" / "assets" / "samples"


def _sizes(text: str | None):
    """`--sizes FIT,VALIDATION,TEST` as benchmark `Sizes` (None when not given)."""
    if text is None:
        return None
    from diffpath.benchmark.spec import Sizes

    try:
        fit, validation, test = (int(n) for n in text.split(","))
        return Sizes(fit=fit, validation=validation, test=test)
    except ValueError as err:
        raise ConfigError(
            f"--sizes {text!r}: give three counts of at least 2, as 200,100,150"
        ) from err


def _feature_config(settings: dict[str, Any]) -> FeatureConfig:
    """The feature config a fit starts from (--config keys and feature flags; dtype auto
    unless given, resolved by the flow): a crop in pixels is refused, since it keeps
    another region of each image at each resolution."""
    if settings.get("center_crop") is not None:
        raise ConfigError(
            f"center_crop {settings['center_crop']} keeps {settings['center_crop']} px "
            "whatever an image's size: give crop, the same region at every resolution "
            "(celeba-face: CelebA's face; 0.8: the central 80% of the short side)"
        )
    return FeatureConfig.parse(**{"dtype": "auto", **settings})


def _check_first(
    run: RunOptions,
    out: str | None = None,
    sources: Sequence[str] = (),
    reference: str | None = None,
) -> None:
    """Refuse, before Prefect starts, what a run would fail on later: a device this machine
    lacks, a source or reference that is not there, a reference whose weights are not
    found, an output another run holds. URIs with `{date}` are checked by the flow."""
    from diffpath.io.lock import check_unlocked
    from diffpath.io.sources import check_source
    from diffpath.model.diffusion import check_device
    from diffpath.scoring.reference import reference_setup

    now = [uri for uri in (*sources, reference, out) if uri and "{" not in uri]
    try:
        check_device(run.device)
        for uri in sources:
            if uri in now and not any(c in uri for c in "*?["):
                check_source(uri)
        if reference in now:
            reference_setup(reference, run.model)
        if out in now:
            check_unlocked(out)
    except DiffPathError as err:
        exit_with_reason(err)


def _flow(flow: Any, run: RunOptions) -> Any:
    """The flow on the task runner `run` asks for."""
    from diffpath_flows.pipeline import task_runner

    return flow.with_options(task_runner=task_runner(run.runner, run.dask_address))


def _run(
    action: Callable[[], Any], on_alert: Callable[[dict[str, str]], None] | None = None
) -> Any:
    """Run a command, turning our errors into a one-line reason and an exit code; a run
    that alerts shows its outputs (the URIs the flow resolved) with `on_alert` first."""
    from prefect.settings import temporary_settings

    from diffpath_flows.server import ensure_api

    if not DEBUG["on"]:
        _quiet_console()
    try:
        # in-process flows: no heartbeat (~1 s per flow run), no telemetry (no network)
        quiet = {"flows.heartbeat_frequency": None, "server.analytics_enabled": False}
        with temporary_settings(updates=quiet):
            ensure_api()
            return action()
    except AlertError as err:
        if DEBUG["on"]:
            console.print_exception()
        if on_alert is not None and err.outputs:
            on_alert(err.outputs)
        console.print(f"[red]alert:[/red] {err}")
        raise typer.Exit(ALERT_EXIT) from None
    except (ValidationError, DiffPathError, OSError) as err:
        exit_with_reason(err)


@app.command("fit-reference")
@with_options(features=True)
def fit_reference(
    source: Annotated[
        list[str], typer.Argument(help="trusted in-distribution images (folder or Parquet URIs)")
    ],
    out: Annotated[str, typer.Option("--out", help="output URI (reference.json goes here)")],
    density: Annotated[str, typer.Option(help="auto | gmm | gaussian | kde")] = "auto",
    target_fpr: Annotated[
        float, typer.Option(help="in-distribution flag rate of the threshold")
    ] = 0.05,
    holdout: Annotated[
        float,
        typer.Option(
            help="fraction held back to calibrate the threshold and p-values (p ≥ 1/(n + 1))"
        ),
    ] = 0.2,
    group_column: Annotated[
        str | None,
        typer.Option(
            "--group-column",
            help="Parquet column (identity, source) whose groups are held back together",
        ),
    ] = None,
    group_by: Annotated[
        str | None,
        typer.Option(
            "--group-by",
            help="group image files by path: 'parent' (their folder) or a regex (its first "
            "group, else the whole match), held back together",
        ),
    ] = None,
    *,
    run: RunOptions,
    settings: dict[str, Any],
) -> None:
    """Fit a density model + flag threshold on trusted in-distribution images.

    Faces like CelebA's aligned frames: add --crop celeba-face, the crop the bundled face
    model was trained on (the same face at every resolution).
    """

    from diffpath.scoring.grouping import Grouping
    from diffpath.scoring.reference import check_fit_options

    grouping = None
    try:
        config = _feature_config(settings)
        check_fit_options(density, config.method, target_fpr, holdout)
        if group_column or group_by:
            grouping = Grouping(column=group_column, by=group_by)
    except (ValidationError, DiffPathError) as err:
        exit_with_reason(err)
    _check_first(run, out, source)

    def action() -> str:
        from diffpath_flows.pipeline import fit_reference_flow

        flow = _flow(fit_reference_flow, run)
        return flow(source, out, config, density, target_fpr, holdout, run, grouping)

    uri = _run(action)
    console.print(f"reference: {uri}")
    _print_calibration(uri)


def _print_calibration(uri: str) -> None:
    """What a reference's calibration set allows: its p-value floor, and the smallest
    contamination an audit of 1,000 images against it can tell from none."""
    from diffpath.scoring.contamination import MIN_GROUPS, detectable_contamination
    from diffpath.scoring.reference import load_reference

    reference = load_reference(uri)
    n = len(reference.calibration_scores)
    groups = reference.calibration_groups
    n_groups = None if groups is None else len(set(groups.tolist()))
    held = "random split" if n_groups is None else f"{n_groups} groups"
    console.print(
        f"calibration: {n:,} held-back images ({held}); p-values down to 1/{n + 1:,} = "
        f"{1 / (n + 1):.2g}; an audit of 1,000 images detects contamination above "
        f"{detectable_contamination(n, 1000):.1%}"
    )
    if n_groups is not None and n_groups < MIN_GROUPS:
        console.print(
            f"[yellow]warning:[/yellow] fewer than {MIN_GROUPS} groups held back: audits "
            "against this reference give no contamination estimate (docs/statistics.md)"
        )


@app.command()
@with_options()
def screen(
    source: Annotated[list[str], typer.Argument(help="incoming images (folder or Parquet URIs)")],
    reference: Annotated[
        str, typer.Option("--reference", help="reference.json from fit-reference")
    ],
    out: Annotated[str, typer.Option("--out", help="output URI for scores, summary, report")],
    fpr: Annotated[
        float | None,
        typer.Option("--fpr", help="flag at this in-distribution rate instead of the reference's"),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="flag scores above this value instead")
    ] = None,
    alert_p: Annotated[
        float | None,
        typer.Option(
            "--alert-p",
            help="alert (exit 3) when this many flags has p-value at most P if all were "
            "in-distribution (any dump size)",
        ),
    ] = None,
    alert_per: Annotated[
        str,
        typer.Option(
            "--alert-per",
            help="what --alert-p holds for: night (at most P of clean nights, over "
            "references) or reference (every clean night, for 99% of references: one "
            "reference kept for months)",
        ),
    ] = "night",
    fail_above: Annotated[
        float | None,
        typer.Option("--fail-above", help="alert (exit 3) when more than this fraction is flagged"),
    ] = None,
    max_errors: Annotated[
        float | None,
        typer.Option(
            "--max-errors", help="alert (exit 3) when more than this fraction is unreadable"
        ),
    ] = None,
    near_bits: Annotated[
        int | None,
        typer.Option(
            "--near-bits",
            help="near copies (duplicates, leaks) differ in at most this many of 64 "
            "perceptual-hash bits, 0-7 (default 2: re-encoded, resized, brightness-shifted "
            "copies); 6: also more lightly cropped ones, 8x the search; 0: equal hashes only",
        ),
    ] = None,
    leak_check: Annotated[
        list[str] | None,
        typer.Option(
            "--leak-check",
            help="a protected set (folder, Parquet, s3://; repeatable) that must not leak in: "
            "near copies of its images go to leaks.parquet and alert (exit 3)",
        ),
    ] = None,
    *,
    run: RunOptions,
    settings: dict[str, Any],
) -> None:
    """Score incoming images against a reference (with the reference's feature config):
    scores, p-values, flags, flagged.txt/.csv, near duplicates, leaks, summary and HTML
    report. Exits 3 after writing them when the run alerts (--alert-p, --fail-above,
    --max-errors, a leak, or nothing scored)."""

    from diffpath.scoring.alerts import ScreenPolicy, flag_rule
    from diffpath.scoring.reference import load_reference

    try:
        policy = ScreenPolicy(
            fpr=fpr,
            threshold=threshold,
            alert_p=alert_p,
            alert_per=alert_per,
            fail_above=fail_above,
            max_errors=max_errors,
            **({} if near_bits is None else {"near_bits": near_bits}),
        )
    except ValidationError as err:
        exit_with_reason(err)
    _check_first(run, out, [*source, *(leak_check or [])], reference)
    if "{" not in reference:
        try:
            flag_rule(load_reference(reference), policy)
        except DiffPathError as err:
            exit_with_reason(err)

    def action() -> dict[str, str]:
        from diffpath_flows.pipeline import screen_flow

        return _flow(screen_flow, run)(source, reference, out, run, policy, leak_check)

    _print_summary(_run(action, on_alert=_print_summary))


def _print_summary(outputs: dict[str, str]) -> None:
    from diffpath.io.storage import read_bytes

    summary = json.loads(read_bytes(outputs["summary"]))
    expected = summary.get("expected_flagged_range")
    chance = "" if expected is None else ", expected {:,}–{:,}".format(*expected)
    console.print(
        f"{summary['n_images']} images: {summary['n_flagged']} flagged "
        f"({100 * summary['flagged_fraction']:.1f}%{chance}), {summary['n_errors']} unreadable, "
        f"{summary['n_duplicates']} near duplicates "
        f"({summary['n_identical_duplicates']} identical); features computed for "
        f"{summary['features_computed']}, {summary['features_from_cache']} from the cache"
    )
    if "n_leaks" in summary:
        check = summary["leak_check"]
        console.print(
            f"leak check: {summary['n_leaks']} near copies of {check['n_protected']:,} "
            f"protected images ({check['n_unreadable']} of them unreadable)"
        )
    if summary.get("contamination_undetermined"):
        console.print(f"contamination undetermined: {summary['contamination_undetermined']}")
    elif "estimated_contamination" in summary:
        detectable = summary.get("detectable_contamination")
        floor = "" if detectable is None else f"; below {detectable:.1%} is no evidence"
        console.print(
            f"estimated contamination {summary['estimated_contamination']:.1%} "
            f"[{summary['contamination_low']:.1%}, {summary['contamination_high']:.1%}] "
            f"({summary['estimator']}{floor})"
        )
    for warning in summary.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {warning}")
    for name, uri in outputs.items():
        console.print(f"  {name}: {uri}")


@app.command()
@with_options(features=True)
def audit(
    source: Annotated[list[str], typer.Argument(help="a training set with unknown contamination")],
    out: Annotated[str, typer.Option("--out", help="output URI")],
    density: Annotated[str, typer.Option(help="auto | gmm | gaussian | kde")] = "auto",
    folds: Annotated[int, typer.Option(help="cross-fitting folds")] = 5,
    fdr: Annotated[
        float,
        typer.Option(
            "--fdr",
            help="suspects (with --reference): the false-discovery rate Benjamini–Hochberg "
            "holds, the share of in-distribution images expected among them",
        ),
    ] = 0.1,
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference",
            help="a trusted reference.json: score against it and estimate the contaminated "
            "fraction from conformal p-values (recommended; it sets the feature config)",
        ),
    ] = None,
    *,
    run: RunOptions,
    settings: dict[str, Any],
) -> None:
    """Rank every image of a set and estimate its contaminated fraction with an interval:
    against a trusted --reference, else by densities not fitted on each image."""
    if reference and settings:
        exit_with_reason(
            ConfigError(f"--reference sets the feature config: drop {', '.join(sorted(settings))}")
        )

    try:
        config = _feature_config(settings)
        if not 0 < fdr < 1:
            raise ConfigError(f"--fdr {fdr}: give a false-discovery rate in (0, 1), as 0.1")
    except (ValidationError, DiffPathError) as err:
        exit_with_reason(err)
    _check_first(run, out, source, reference)

    def action() -> dict[str, str]:
        from diffpath_flows.pipeline import audit_flow

        flow = _flow(audit_flow, run)
        return flow(source, out, config, density, folds, run, reference, fdr)

    outputs = _run(action)
    _print_summary(outputs)


@app.command()
@with_options()
def evaluate(
    in_dist: Annotated[list[str], typer.Option("--in-dist", help="in-distribution test images")],
    ood: Annotated[
        list[str],
        typer.Option(
            "--ood",
            help="OOD source, optionally NAME=URI (else named by the part of its URI that "
            "differs); repeatable",
        ),
    ],
    reference: Annotated[
        str, typer.Option("--reference", help="reference.json from fit-reference")
    ],
    out: Annotated[str, typer.Option("--out", help="output URI")],
    *,
    run: RunOptions,
    settings: dict[str, Any],
) -> None:
    """AUROC, FPR@95 and AUPR of OOD sets against an in-distribution set, with ROC curves."""

    from diffpath_flows.options import name_sources

    try:
        sources = {name: [uri] for name, uri in name_sources(ood).items()}
    except DiffPathError as err:
        exit_with_reason(err)
    _check_first(run, out, [*in_dist, *(u for uris in sources.values() for u in uris)], reference)

    def action() -> dict[str, str]:
        from diffpath_flows.pipeline import evaluate_flow

        return _flow(evaluate_flow, run)(in_dist, sources, reference, out, run)

    outputs = _run(action)
    _print_metrics(outputs["metrics"])
    console.print(f"report: {outputs['report']}")


def _print_metrics(metrics_uri: str) -> None:
    from diffpath.io.storage import read_bytes

    metrics = json.loads(read_bytes(metrics_uri))
    console.print(f"in-distribution: {metrics['in_dist']['n']:,} images")
    for name, m in metrics["ood"].items():
        low, high = m["auroc_interval"]
        console.print(
            f"{name:>20s} ({m['n']:,}): AUROC {m['auroc']:.4f} [{low:.3f}, {high:.3f}]  "
            f"FPR@95 {m['fpr95']:.4f}  AUPR-in {m['aupr_in']:.4f}  AUPR-out {m['aupr_out']:.4f}"
        )


@app.command()
@with_options(run=("device",), settings=True)
def train(
    out: Annotated[str, typer.Option("--out", help="output URI for checkpoints and the model")],
    data: Annotated[list[str] | None, typer.Option("--data", help="training image sources")] = None,
    val_data: Annotated[
        list[str] | None, typer.Option("--val-data", help="validation sources")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="optimizer steps", show_default="1000")] = None,
    minutes: Annotated[
        float | None, typer.Option(help="stop (and save) after this wall time")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="images per step", show_default="32")
    ] = None,
    channels: Annotated[
        str | None,
        typer.Option(help="UNet block channels, comma-separated", show_default=DEFAULT_CHANNELS),
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="AdamW learning rate", show_default="2e-4")
    ] = None,
    crop: Annotated[
        str | None,
        typer.Option(
            help="region of --data images to train on, the same at every resolution: a name "
            "(celeba-face), a fraction of the short side (0.8) or a box of fractions",
            show_default="none: the central square",
        ),
    ] = None,
    init: Annotated[str | None, typer.Option(help="warm-start from this model ('default')")] = None,
    resume: Annotated[bool, typer.Option(help="continue from the last checkpoint in OUT")] = False,
    seed: Annotated[int | None, typer.Option(help="random seed", show_default="0")] = None,
    *,
    run: RunOptions,
    settings: dict[str, Any],
) -> None:
    """Train the base diffusion model (EMA weights saved in diffusers layout every
    checkpoint); per-source crops, precision and the schedule come from --config."""

    from diffpath.model.train import TrainConfig

    values = dict(settings)  # TrainConfig fields of --config (recipes/v2-cpu.yaml)
    flags = {
        "data": data or None,
        "val_data": val_data or None,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "block_out_channels": channels and tuple(int(c) for c in channels.split(",")),
        "seed": seed,
        "init": init,
        "crop": crop,
    }
    values |= {k: v for k, v in flags.items() if v is not None}
    try:
        if "data" not in values:
            raise ConfigError("give training images with --data or in --config")
        config = TrainConfig(**values)
    except (ValidationError, DiffPathError) as err:
        exit_with_reason(err)
    _check_first(run, sources=[s.uri for s in (*config.data, *config.val_data)])

    def action() -> str:
        from diffpath_flows.train import train_flow

        return train_flow(config, out, resume, run.device, minutes, progress=True)

    model = _run(action)
    crop = f" --crop {config.crop}" if isinstance(config.crop, str) else ""
    console.print(f"model: {model}")
    console.print(f"next: diffpath fit-reference TRUSTED --model {model}{crop} --out REF")


@app.command()
@with_options(run=tuple(o for o in RUN_OPTIONS if o != "max_images"))
def benchmark(
    spec: Annotated[str, typer.Argument(help="benchmark spec YAML (benchmarks/shared-data.yaml)")],
    out: Annotated[str, typer.Option("--out", help="output URI; {date} for scheduled runs")],
    full: Annotated[
        bool, typer.Option("--full", help="the spec's full sizes and its ablations (a GPU)")
    ] = False,
    ablations: Annotated[
        bool | None, typer.Option("--ablations/--no-ablations", help="run the ablations too")
    ] = None,
    previous: Annotated[
        str | None,
        typer.Option(
            "--previous",
            help="an earlier run's results.parquet (or folder, or 'latest'): deltas, and exit 3 "
            "on a regression",
        ),
    ] = None,
    data_root: Annotated[
        str | None, typer.Option("--data-root", help="where the spec's relative paths live")
    ] = None,
    sizes: Annotated[
        str | None,
        typer.Option(
            "--sizes", help="images per set as FIT,VALIDATION,TEST, in place of the spec's"
        ),
    ] = None,
    *,
    run: RunOptions,
    settings: dict[str, Any],
) -> None:
    """Methods side by side on every (in-distribution, OOD) pair of a spec: AUROC with
    bootstrap intervals, the default chosen on validation, regressions against --previous."""

    from diffpath.benchmark.spec import load_spec

    try:
        parsed_sizes = _sizes(sizes)
        load_spec(spec, data_root, run.model)
    except (ValidationError, DiffPathError) as err:
        exit_with_reason(err)
    _check_first(run, out)

    def action() -> dict[str, str]:
        from diffpath_flows.benchmark import benchmark_flow

        return _flow(benchmark_flow, run)(
            spec, out, full, ablations, previous, data_root, run, parsed_sizes
        )

    _print_benchmark(_run(action, on_alert=_print_benchmark))


def _print_benchmark(outputs: dict[str, str]) -> None:
    from diffpath.io.storage import read_bytes

    summary = json.loads(read_bytes(outputs["summary"]))
    for m in summary["methods"]:
        low, high = m["test_auroc_interval"]
        console.print(
            f"{m['method']:>18s}: mean AUROC {m['test_auroc']:.4f} [{low:.3f}, {high:.3f}]  "
            f"({m['unet_evals']} UNet evals/image)"
        )
    console.print(f"chosen on validation: {summary['chosen_default']}")
    for name, uri in outputs.items():
        console.print(f"  {name}: {uri}")


@app.command("convert-model")
def convert_model(
    source: Annotated[
        str,
        typer.Argument(
            help="an improved-/guided-diffusion or DiffPath checkpoint: a .pt state dict or "
            ".safetensors, at any URI (local, s3://, hf:// with huggingface_hub)"
        ),
    ],
    out: Annotated[str, typer.Option("--out", help="a new local folder for the model")],
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            help="a published architecture: diffpath-celeba32, improved-cifar10-32, "
            "improved-imagenet64, guided-256-uncond (docs/models.md)",
        ),
    ] = None,
    flags: Annotated[
        str | None,
        typer.Option("--flags", help="JSON of the original scripts' flags, for any other model"),
    ] = None,
) -> None:
    """Convert a published diffusion checkpoint into a model folder for --model, exactly
    (its schedule, timestep rescale and ε channels kept); refused unless every weight fits."""
    from diffpath.model.convert import convert_model as convert
    from diffpath.model.diffusion import load_model

    try:
        folder = convert(source, out, preset, flags)
        model = load_model(str(folder), device="cpu")
    except DiffPathError as err:
        exit_with_reason(err)
    size = model.sample_size
    sizes = "" if size == FeatureConfig().image_size else f" --image-size {size}"
    if size and size > 32:
        sizes += " --resize-via 32"  # DiffPath's protocol for 32-px sets on a larger model
    console.print(f"model {model.model_id}: {folder} ({model.num_train_timesteps} steps)")
    console.print(f"next: diffpath fit-reference TRUSTED --model {folder}{sizes} --out REF")


@app.command()
@with_options(run=("device",))
def demo(
    out: Annotated[str, typer.Option("--out", help="where the demo writes")] = "diffpath-demo",
    *,
    run: RunOptions,
    settings: dict[str, Any],
) -> None:
    """Fit on bundled faces, screen a bundled mixed dump, print AUROC and the report path."""
    _check_first(run)

    def action() -> dict[str, str]:
        from diffpath.scoring.grouping import Grouping
        from diffpath_flows.pipeline import fit_reference_flow, screen_flow

        # half the 120 faces, whole identities, calibrate: p-values down to 1/61
        by_identity = Grouping(column="label")
        reference = fit_reference_flow(
            [str(SAMPLES / "reference.parquet")],
            f"{out}/reference",
            FeatureConfig(dtype="auto"),  # as every new fit: bfloat16 where it is native
            holdout=0.5,
            run=run,
            grouping=by_identity,
        )
        return screen_flow([str(SAMPLES / "incoming.parquet")], reference, f"{out}/screen", run=run)

    outputs = _run(action)
    import polars as pl

    from diffpath.io.storage import read_parquet
    from diffpath.scoring.metrics import auroc

    scores = pl.from_arrow(read_parquet(outputs["scores"]))
    is_face = scores["path"].str.starts_with("faces/").to_numpy()
    values = scores["score"].to_numpy()
    _print_summary(outputs)
    console.print(
        f"AUROC faces vs. CIFAR-10 + textures: {auroc(values[is_face], values[~is_face]):.4f}"
    )
    console.print(f"open the report: {Path(outputs['report']).resolve()}")


if __name__ == "__main__":
    app()
