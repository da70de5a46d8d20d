"""Pieces every CLI command shares: error handling, model and argument parsing."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="Hub id, local checkpoint directory, or 'minilm'.")
]
SpaceOpt = Annotated[
    Path | None,
    typer.Option(
        "--space",
        help='JSON/YAML file overriding choice lists, e.g. {"depth": [3, 6], "ffn": [768, 1536]}.',
    ),
]
ArchOpt = Annotated[
    str,
    typer.Option(
        "--arch",
        "-a",
        help='Architecture JSON file, or inline JSON {"layers": [{"heads": 12, "ffn": 3072}]}.',
    ),
]


JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json", help="Print the result as JSON on stdout (progress and notes stay on stderr)."
    ),
]


def print_json(result) -> None:
    """A command's result for machines: one strict JSON document on stdout (a metric that
    is not a number, such as NaN, is null)."""
    import json
    import math

    def strict(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: strict(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [strict(v) for v in x]
        return x

    typer.echo(json.dumps(strict(result), indent=2, default=str, allow_nan=False))


DEBUG_ENV = "YOCO_DEBUG"  # set to 1 for the full traceback of any error


@contextlib.contextmanager
def user_errors():
    """The one error boundary of every command: user mistakes and environment failures
    (a typo, an unreadable file, a full disk, a folder that cannot be written) end with
    one ``error:`` line on stderr and a non-zero exit; Ctrl-C exits 130, SIGTERM 143.
    ``YOCO_DEBUG=1`` re-raises with the traceback."""
    import os

    from yoco_deploy.errors import Terminated, YocoError

    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        yield
    except YocoError as err:
        if debug:
            raise
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    except OSError as err:
        if debug:
            raise
        import errno

        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        in_the_way = err.errno == errno.ENOTDIR or (
            err.errno == errno.EEXIST and err.filename and Path(err.filename).is_file()
        )
        if in_the_way:
            err.strerror = "a file is where a folder is needed"
        if getattr(err, "filename2", None):  # a copy names both ends; either may be at fault
            where = f" (copying {err.filename} to {err.filename2})"
        typer.echo(f"error: {err.strerror or err}{where}", err=True)
        raise typer.Exit(1) from None
    except Terminated:
        typer.echo("terminated", err=True)
        raise typer.Exit(143) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def space_for(model: str, space_file: Path | None, config=None):
    from yoco_deploy.model.loading import load_config
    from yoco_deploy.space import SearchSpace

    overrides = SearchSpace.load_overrides(space_file) if space_file else None
    return SearchSpace.from_config(config or load_config(model), overrides)


def arch_arg(text: str):
    """--arch: inline JSON (an object with "layers") or the path of a JSON file."""
    from yoco_deploy.arch import Arch
    from yoco_deploy.errors import ArchError

    if not text.strip():
        raise ArchError(
            "--arch is empty: pass a JSON file or inline JSON like "
            '\'{"layers": [{"heads": 12, "ffn": 3072}]}\''
        )
    if text.lstrip()[:1] in "{[":
        return Arch.from_json(text)
    return Arch.load(text)


@contextlib.contextmanager
def progress_bar(description: str, enabled: bool = True):
    """A rich progress bar with ETA, as a ``(done, total, eta_s, label)`` callback; with
    ``enabled=False`` (non-main processes) a callback that draws nothing."""
    if not enabled:
        yield lambda done, total, eta_s, label: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[label]}"),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=None, label="")

        def update(done: int, total: int, eta_s: float | None, label: str) -> None:
            bar.update(task, completed=done, total=total, label=label)

        yield update


def table_console():
    """Rich console on stderr for tables; when stderr is not a terminal (a log file, CI)
    rich would assume 80 columns and cut every cell, so give it room."""
    import sys

    from rich.console import Console

    return Console(stderr=True, width=None if sys.stderr.isatty() else 200)
