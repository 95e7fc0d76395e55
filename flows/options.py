"""The options commands share, each declared once: the run options (`RunOptions` fields),
the feature options (`FeatureConfig` fields) and `--config FILE`, which may hold either;
and the names of sources given as `NAME=URI` or URIs (`name_sources`).
Help texts and shown defaults come from the fields themselves.

Flags override the file, the file overrides the defaults; a file key a command does not
take is refused with its name, never ignored.
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console

from diffpath.config import FeatureConfig, read_config_file
from diffpath.errors import ConfigError, DiffPathError
from diffpath.methods import METHODS
from diffpath_flows.run import RunOptions

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


SOURCE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def name_sources(items: Sequence[str]) -> dict[str, str]:
    """Names for sources given as `NAME=URI` or as URIs, in order; a URI is named by its
    stem, or by the part of its path that differs from the others' when stems repeat.
    `=` splits only after a plain word (so `s3://b/date=2026-12-01/` is a URI) and not in
    an existing local path. Two sources with one name are a `ConfigError`."""
    given: list[tuple[str | None, str]] = []
    for item in items:
        name, sep, uri = item.partition("=")
        named = sep and SOURCE_NAME.fullmatch(name) and uri and not Path(item).exists()
        given.append((name, uri) if named else (None, item))
    derived = iter(_distinct_names([uri for name, uri in given if name is None]))
    names = [name or next(derived) for name, _ in given]
    for name, count in Counter(names).items():
        if count > 1:
            raise ConfigError(
                f"{count} sources are named {name!r}: name each one NAME=URI, "
                "or drop the repeated source"
            )
    return {name: uri for name, (_, uri) in zip(names, given, strict=True)}


def _distinct_names(uris: Sequence[str]) -> list[str]:
    """Stems when they differ, else the path parts where the URIs differ, joined by '/'."""
    from diffpath.io.images import IMAGE_EXTENSIONS  # torch: not for every --help

    paths = [PurePosixPath(uri.rstrip("/")) for uri in uris]
    known = {".parquet", *IMAGE_EXTENSIONS}
    parts = [(p.with_suffix("") if p.suffix.lower() in known else p).parts for p in paths]
    stems = [p[-1] if p else uri for p, uri in zip(parts, uris, strict=True)]
    if len(set(stems)) == len(stems):
        return stems
    lead = trail = 0
    shortest = min(map(len, parts))
    while lead < shortest and len({p[lead] for p in parts}) == 1:
        lead += 1
    while trail < shortest - lead and len({p[-1 - trail] for p in parts}) == 1:
        trail += 1
    middles = ["/".join(p[lead : len(p) - trail]) for p in parts]
    return [middle or stem for middle, stem in zip(middles, stems, strict=True)]
