"""The options every shipping command takes (the format, where and how the bundle runs,
its shapes, the quality floor), declared once: ``with_ship_options`` adds them to a
command and hands them over as one ``ShipSettings``, checked before any work."""

from __future__ import annotations

import functools
import inspect
from typing import Annotated

import typer

FormatOpt = Annotated[
    str, typer.Option("--format", help="fp32, fused, int8 (CPU default) or fp16 (GPU).")
]
ProviderOpt = Annotated[
    str | None,
    typer.Option(help="Where bundles run, are timed and scored: cpu, cuda, tensorrt, ..."),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(min=1, help="Intra-op threads the bundle runs with (default: as profiled)."),
]
SpinningOpt = Annotated[
    str | None,
    typer.Option(
        help="Idle worker threads: stop-after-run (spin during a run only), on (ONNX "
        "Runtime's default) or off. Default: as the device's predictor was profiled."
    ),
]
SeqLenOpt = Annotated[int, typer.Option(min=1, help="Tokens per input the bundle is timed at.")]
BatchOpt = Annotated[int, typer.Option(min=1, help="Inputs per run the bundle is timed at.")]
MinMetricOpt = Annotated[
    float | None,
    typer.Option(
        help="Refuse to ship below this dev metric (default: clearly above the majority "
        "class: its score + 2 standard errors, at least 0.02)."
    ),
]
AllowWeakOpt = Annotated[
    bool,
    typer.Option(help="Ship a sub-BERT below the quality floor anyway, with a manifest warning."),
]

PolishOpt = Annotated[
    str | None,
    typer.Option(
        help="Before shipping, distil the chosen sub-BERT alone from the teacher for this "
        "many steps (300) or minutes (5min), resumable; kept only if it scores better on "
        "the search split. auto (the default): 18% of the super-BERT's own training steps, "
        "where it was trained by yoco-deploy and its teacher is here; 0: none."
    ),
]

# (parameter, annotation, default): ShipSettings.from_options's arguments, by name
OPTIONS = (
    ("fmt", FormatOpt, "int8"),
    ("provider", ProviderOpt, None),
    ("threads", ThreadsOpt, None),
    ("spinning", SpinningOpt, None),
    ("seq_len", SeqLenOpt, 128),
    ("batch", BatchOpt, 1),
    ("min_metric", MinMetricOpt, None),
    ("allow_weak", AllowWeakOpt, False),
    ("polish", PolishOpt, "auto"),
)


def with_ship_options(command):
    """``command(..., ship=ShipSettings)`` as a typer command that takes the ship options;
    they are checked (format, session values, the provider installed) before it runs."""
    own = inspect.signature(command)  # annotations as written (strings, lazily imported)
    params = [
        p.replace(annotation=_evaluated(p.annotation, command))
        for p in own.parameters.values()
        if p.name != "ship"  # typed for readers; its class is imported only when needed
    ]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=default)
        for name, kind, default in OPTIONS
    ]

    @functools.wraps(command)
    def wrapper(**kwargs):
        from yoco_deploy.cli.common import user_errors
        from yoco_deploy.deploy.ship import ShipSettings

        given = {name: kwargs.pop(name) for name, _, _ in OPTIONS}
        with user_errors():
            ship = ShipSettings.from_options(**given)
        return command(**kwargs, ship=ship)

    last = [  # --json stays last in --help
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params if p.name == "as_json"
    ]
    params = [*(p for p in params if p.name != "as_json"), *added, *last]
    wrapper.__signature__ = own.replace(parameters=params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def _evaluated(annotation, command):
    if isinstance(annotation, str):
        return eval(annotation, command.__globals__)
    return annotation
