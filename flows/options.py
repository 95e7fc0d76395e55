"""The options commands share, each declared once: the run options (`RunOptions` fields),
the feature options (`FeatureConfig` fields) and `--config FILE`, which may hold either.
Help texts and shown defaults come from the fields themselves.

Flags override the file, the file overrides the defaults; a file key a command does not
take is refused with its name, never ignored.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console

from diffpath.config import METHOD_DEFAULTS, FeatureConfig, read_config_file
from diffpath.errors import ConfigError, DiffPathError
from flows.run import RunOptions

__all__ = ["FEATURE_OPTIONS", "RUN_OPTIONS", "console", "exit_with_reason", "with_options"]

console = Console(stderr=True, soft_wrap=True)

RUN_OPTIONS = tuple(name for name in RunOptions.model_fields if name != "progress")
FEATURE_OPTIONS = ("model", "method", "timesteps", "image_size", "crop", "resize_via")
FLAGS = {"features_root": "--features"}  # where a flag is not the field's name
DEFAULT_METHOD = FeatureConfig.model_fields["method"].default
HELP = {
    "method": "feature method: " + " | ".join(METHOD_DEFAULTS),
    "timesteps": "K timesteps; by method: "
    + ", ".join(f"{m} {d['timesteps']}" for m, d in METHOD_DEFAULTS.items()),
}
SHOWN = {"timesteps": METHOD_DEFAULTS[DEFAULT_METHOD]["timesteps"]}  # the method's default


def _parameter(model: type[BaseModel], name: str) -> inspect.Parameter:
    """A keyword option for one field: None when not given, its real default in --help."""
    field = model.model_fields[name]
    shown = SHOWN.get(name, field.default)
    option = typer.Option(
        FLAGS.get(name, "--" + name.replace("_", "-")),
        help=HELP.get(name, field.description),
        show_default=False if shown in (None, False) else str(shown),
    )
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[field.annotation | None, option],
    )


CONFIG = inspect.Parameter(
    "config",
    inspect.Parameter.KEYWORD_ONLY,
    default=None,
    annotation=Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="YAML or JSON file of run options and this command's settings; flags win",
        ),
    ],
)


def with_options(
    run: Sequence[str] = RUN_OPTIONS,
    features: bool = False,
    settings: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command `--config`, the `run` options and (with `features`) the feature
    options; it is called with `run: RunOptions` and `settings: dict` — the given feature
    options and the file's other keys, which only a command with `features` or `settings`
    (`train`: its `TrainConfig` fields) may have; it validates them."""
    added = [
        CONFIG,
        *(_parameter(RunOptions, name) for name in run),
        *(_parameter(FeatureConfig, name) for name in (FEATURE_OPTIONS if features else ())),
    ]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [
            p
            for p in inspect.signature(command, eval_str=True).parameters.values()
            if p.name not in ("run", "settings")
        ]

        @functools.wraps(command)
        def wrapper(**given: Any) -> Any:
            config = given.pop("config")
            flags = {p.name: given.pop(p.name) for p in added[1:]}
            try:
                values = read_config_file(config) if config else {}
                values |= {k: v for k, v in flags.items() if v is not None}
                run_values = {k: values.pop(k) for k in list(values) if k in run}
                if values and not (features or settings):
                    raise ConfigError(
                        f"--config {config}: {', '.join(sorted(values))}: not options of this "
                        f"command (its run options: {', '.join(run)})"
                    )
                options = RunOptions(progress=True, **run_values)
            except (ValidationError, DiffPathError) as err:
                exit_with_reason(err)
            return command(**given, run=options, settings=values)

        wrapper.__signature__ = inspect.Signature([*own, *added])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *added]}
        return wrapper

    return decorate


def exit_with_reason(err: Exception) -> NoReturn:
    """One line saying what went wrong, and the exit code: 2 for arguments and configs."""
    if isinstance(err, ValidationError):
        reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        line, code = f"invalid {err.title} option: {reasons}", 2
    else:
        line, code = str(err).splitlines()[0], 2 if isinstance(err, ConfigError) else 1
    console.print(f"[red]error:[/red] {line}")
    raise typer.Exit(code) from None
