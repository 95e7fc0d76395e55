"""The options commands share, each declared once: the run options (`RunOptions` fields),
the feature options (`FeatureConfig` fields) and `--config FILE`, which may hold either.
Help texts and shown defaults come from the fields themselves.

Flags override the file, the file overrides the defaults; a file key a command does not
take is refused with its name, never ignored.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console

from diffpath.config import FeatureConfig, read_config_file
from diffpath.errors import ConfigError, DiffPathError
from diffpath.methods import METHODS
from flows.run import RunOptions

__all__ = ["DEBUG", "FEATURE_OPTIONS", "RUN_OPTIONS", "console", "exit_with_reason", "with_options"]

console = Console(stderr=True, soft_wrap=True)
DEBUG = {"on": False}  # `diffpath --debug`: tracebacks too

RUN_OPTIONS = tuple(name for name in RunOptions.model_fields if name != "progress")
FEATURE_OPTIONS = ("method", "timesteps", "image_size", "crop", "resize_via")
FLAGS = {"features_root": "--features"}  # where a flag is not the field's name
DEFAULT_METHOD = FeatureConfig.model_fields["method"].default
HELP = {
    "timesteps": "K timesteps; by method: "
    + ", ".join(f"{m.name} {m.defaults['timesteps']}" for m in METHODS.values()),
}
SHOWN = {"timesteps": METHODS[DEFAULT_METHOD].defaults["timesteps"]}  # the method's default


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
            config, context = given.pop("config"), given.pop("context")
            flags = {p.name: given.pop(p.name) for p in added[1:]}
            try:
                values = read_config_file(config) if config else {}
                for name in [p.name for p in own if p.name in values]:  # every flag is a key
                    value = values.pop(name)
                    if context.get_parameter_source(name).name == "DEFAULT":  # flags win
                        given[name] = value
                values |= {k: v for k, v in flags.items() if v is not None}
                run_values = {k: values.pop(k) for k in list(values) if k in run}
                if values and not (features or settings):
                    raise ConfigError(
                        f"--config {config}: {', '.join(sorted(values))}: not options of this "
                        f"command (its keys: {', '.join(_keys(own, run))})"
                    )
                options = RunOptions(progress=True, **run_values)
            except (ValidationError, DiffPathError) as err:
                exit_with_reason(err)
            return command(**given, run=options, settings=values)

        context = inspect.Parameter(
            "context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context
        )
        signature = [*own, *added, context]
        wrapper.__signature__ = inspect.Signature(signature)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in signature}
        return wrapper

    return decorate


def _keys(own: Sequence[inspect.Parameter], run: Sequence[str]) -> list[str]:
    """The --config keys of a command: its own options' names and its run options."""
    options = [p.name for p in own if p.default is not inspect.Parameter.empty]
    return sorted({*options, *run})


def flag_and_key(field: str) -> str:
    """How a person names an option: its flag and its --config key."""
    return f"{FLAGS.get(field, '--' + field.replace('_', '-'))} (config key {field})"


def _reason(error: Any) -> str:
    """One pydantic error in the words of the command line."""
    message = str(error["msg"]).removeprefix("Value error, ")
    where = [str(part) for part in error["loc"]]
    if not where:
        return message
    return f"{flag_and_key(where[0])}{''.join('.' + w for w in where[1:])}: {message}"


def exit_with_reason(err: Exception) -> NoReturn:
    """One line saying what went wrong, and the exit code: 2 for arguments and configs
    (with --debug, the traceback first)."""
    if DEBUG["on"] and sys.exc_info()[0] is not None:
        console.print_exception()
    if isinstance(err, ValidationError):
        line, code = "invalid option " + "; ".join(_reason(e) for e in err.errors()), 2
    else:
        line, code = str(err).splitlines()[0], 2 if isinstance(err, ConfigError) else 1
    console.print(f"[red]error:[/red] {line}")
    raise typer.Exit(code) from None
