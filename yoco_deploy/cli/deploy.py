"""CLI commands for stage II: search (and ship) for many targets at once, or ship one arch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from yoco_deploy.cli.common import (
    JsonOpt,
    arch_arg,
    print_json,
    progress_bar,
    quiet_transformers,
    user_errors,
)

SupernetOpt = Annotated[
    str, typer.Option(help="Trained super-BERT (OUTPUT_DIR/final of `train`), or any BERT.")
]
TargetOpt = Annotated[
    list[str],
    typer.Option(
        "--target",
        "-t",
        help="NAME:latency=20ms[,params=30M][,flops=2G][,size=60MB]; "
        "repeat for many targets. Latency needs predictors/NAME.json.",
    ),
]
TaskOpt = Annotated[str | None, typer.Option(help="Task, if the checkpoint does not say.")]
DataDirOpt = Annotated[Path | None, typer.Option(help="Local data (else the training's).")]
PredictorsOpt = Annotated[Path, typer.Option(help="Where NAME.json predictors live.")]
BundlesOpt = Annotated[Path, typer.Option(help="Where bundles are written.")]
FormatOpt = Annotated[
    str, typer.Option("--format", help="fp32, fused, int8 (CPU default) or fp16 (GPU).")
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(min=1, help="Intra-op threads the bundle runs with (default: as profiled)."),
]
ProviderOpt = Annotated[
    str | None,
    typer.Option(help="Where bundles run, are timed and scored: cpu, cuda, tensorrt, ..."),
]
SpinningOpt = Annotated[
    str | None,
    typer.Option(
        help="Idle worker threads: stop-after-run (spin during a run only), on (ONNX "
        "Runtime's default) or off. Default: as the device's predictor was profiled."
    ),
]


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


def _ship_settings(
    fmt: str,
    seq_len: int,
    batch: int,
    session: dict,
    min_metric: float | None = None,
    allow_weak: bool = False,
):
    from yoco_deploy.deploy.ship import DEFAULT_SESSION, ShipSettings
    from yoco_deploy.device.runner import resolve_provider
    from yoco_deploy.export.sub_bert import ExportOptions

    ExportOptions.for_format(fmt)  # validates the name
    given = {k: v for k, v in session.items() if v is not None}
    spec = DEFAULT_SESSION.with_options(**given)  # checks the values now
    resolve_provider(spec.provider)  # an unavailable provider fails now, not later
    return ShipSettings(
        fmt=fmt,
        session=given,
        seq_len=seq_len,
        batch=batch,
        min_metric=min_metric,
        allow_weak=allow_weak,
    )


def _calibrated(models):
    from yoco_deploy.device.calibrate import time_reference

    refs: dict[str, float] = {}  # one timing per device
    out = []
    for cm in models:
        if cm.predictor is None:
            out.append(cm)
            continue
        name = cm.target.name
        if name not in refs:
            refs[name] = time_reference(cm.predictor, cm.batch, cm.seq_len)
            typer.echo(f"{name}: reference model {refs[name]:.2f} ms here now", err=True)
        out.append(cm.recalibrated(refs[name]))
    return out


def _summary(shipped, bundles: Path, as_json: bool) -> None:
    from yoco_deploy.cli.pipeline import bundle_summary, print_summary
    from yoco_deploy.plots import pareto_plot
    from yoco_deploy.util.atomic import write_text

    print_summary([s.path for s in shipped], as_json)
    rows = [bundle_summary(s.path) for s in shipped]
    bundles.mkdir(parents=True, exist_ok=True)
    write_text(bundles / "summary.json", json.dumps(rows, indent=1))
    if shipped:
        plot = pareto_plot(shipped, bundles / "pareto.png")
        typer.echo(f"summary: {bundles / 'summary.json'}; Pareto plot: {plot}", err=True)


def search(
    supernet: SupernetOpt,
    target: TargetOpt,
    task: TaskOpt = None,
    data_dir: DataDirOpt = None,
    algo: Annotated[str, typer.Option(help="esng, random or evolution.")] = "esng",
    evaluations: Annotated[int, typer.Option(min=1, help="Accuracy evaluations per target.")] = 100,
    cold: Annotated[
        bool, typer.Option(help="ESNG from uniform theta, not the trained one.")
    ] = False,
    infeasible: Annotated[
        str, typer.Option(help="Without repair: skip (default) or penalize (YOCO's reward).")
    ] = "skip",
    repair: Annotated[
        bool,
        typer.Option(
            help="ESNG and evolution: shrink an infeasible sample to the budget boundary "
            "with the cost model instead of ranking it last (no evaluation spent)."
        ),
    ] = True,
    repair_log: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Set torn or edited lines of an existing search log aside first (every "
            "intact evaluation and a backup are kept).",
        ),
    ] = False,
    calibrate: Annotated[
        bool,
        typer.Option(
            help="Scale latency predictions by the device's reference model timed here now "
            "(when the target device is this machine and its speed drifts)."
        ),
    ] = False,
    seed: int = 0,
    out: Annotated[Path, typer.Option(help="Search logs and results.")] = Path("runs/search"),
    predictors_dir: PredictorsOpt = Path("predictors"),
    ship: Annotated[bool, typer.Option(help="Ship each target's winner as a bundle.")] = True,
    bundles: BundlesOpt = Path("bundles"),
    fmt: FormatOpt = "int8",
    provider: ProviderOpt = None,
    threads: ThreadsOpt = None,
    spinning: SpinningOpt = None,
    seq_len: Annotated[int, typer.Option(min=1)] = 128,
    batch: Annotated[int, typer.Option(min=1)] = 1,
    min_metric: MinMetricOpt = None,
    allow_weak: AllowWeakOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Find the best sub-BERT for each target (YOCO stage II) and ship it.

    Each search is logged to OUT/TARGET/search-ALGO-seedN.jsonl; rerunning resumes it.
    Example: yoco-deploy search --supernet runs/sst2/final -t x86-2c-ort-cpu-minilm:latency=8ms

    Several GPUs: accelerate launch --multi_gpu --num_processes 4 -m yoco_deploy.cli.main
    search ... (each generation's candidates are evaluated in parallel; one process logs
    and ships).
    """
    with user_errors():
        from accelerate import Accelerator

        from yoco_deploy.deploy.budgets import parse_target
        from yoco_deploy.deploy.per_target import (
            cost_model_for,
            load_supernet,
            make_evaluator,
            search_target,
            ship_result,
        )
        from yoco_deploy.deploy.search import SearchSettings
        from yoco_deploy.device.runner import resolve_provider

        targets = [parse_target(t) for t in target]
        session = {"provider": provider, "threads": threads, "spinning": spinning}
        ship_settings = _ship_settings(fmt, seq_len, batch, session, min_metric, allow_weak)
        quiet_transformers()
        net = load_supernet(supernet, task, data_dir)
        theta = None if cold else net.theta
        settings = SearchSettings(
            algo=algo,
            evaluations=evaluations,
            seed=seed,
            warm_theta=theta,
            infeasible=infeasible,
            repair=repair,
        )
        models = [cost_model_for(t, net, predictors_dir, seq_len, batch, fmt) for t in targets]
        if calibrate:
            models = _calibrated(models)
        for cm in models:
            cm.check_achievable()  # every target, before any long work
            if ship:  # a session that contradicts the profile fails now, not after search
                resolve_provider(ship_settings.session_for(cm).provider)
            if repair_log:
                from yoco_deploy.deploy.per_target import search_log_path
                from yoco_deploy.deploy.search import Search

                log = search_log_path(out, cm.target, settings)
                typer.echo(f"{log}: {Search.repair_log(log)} lines set aside", err=True)
        accelerator = Accelerator()
        main = accelerator.is_main_process
        evaluator = make_evaluator(net, seed, accelerator)
        results = []
        for cm in models:  # every process searches (same trajectory); then one ships
            label = cm.target.label()
            with progress_bar(f"search {label}", enabled=main) as update:
                result = search_target(
                    net,
                    cm,
                    settings,
                    out,
                    evaluator,
                    progress=lambda d, n, e, u=update: u(d, n, e, ""),
                    main_process=main,
                )
            results.append(result)
            if main:
                best = result.best
                if result.exhausted:
                    typer.echo(
                        f"{label}: the budgets leave only {result.evaluations} sub-BERTs "
                        "that it could find; all were evaluated (fewer than --evaluations)",
                        err=True,
                    )
                typer.echo(
                    f"{label}: best {best.arch.short()} search {best.fitness:.4f} "
                    f"rescore {best.rescore}",
                    err=True,
                )
        # no collective call after this point: the main process ships alone
        accelerator.wait_for_everyone()
        accelerator.end_training()
        if not main:
            return
        if not ship:
            if as_json:
                print_json([_search_summary(cm, r) for cm, r in zip(models, results, strict=True)])
            return
        say = lambda s: typer.echo(s, err=True)  # noqa: E731
        shipped = [
            ship_result(net, cm, result, bundles, ship_settings, say=say)
            for cm, result in zip(models, results, strict=True)
        ]
        _summary(shipped, bundles, as_json)


def _search_summary(cm, result) -> dict:
    best = result.best
    return {
        "target": cm.target.label(),
        "arch_id": best.arch.arch_id,
        "arch": best.arch.to_dict(),
        "search_metric": best.fitness,
        "rescore_metric": best.rescore,
        "costs": best.costs,
        "evaluations": result.evaluations,
    }


def _ranked_archs(path: Path) -> list:
    """The ranked candidates of a search's result.json, or one clear error."""
    from yoco_deploy.arch import Arch
    from yoco_deploy.deploy.search import SearchError

    try:
        ranked = json.loads(path.read_text())["ranked"]
        archs = [Arch.from_dict(r["arch"]) for r in ranked]
    except ValueError as err:  # not JSON, or an arch that is not one
        raise SearchError(
            f"{path} is not a search result (a result.json written by `search`): {err}"
        ) from None
    except (KeyError, TypeError):
        raise SearchError(
            f"{path} is not a search result: `search` writes a result.json holding "
            '"ranked": [{"arch": {"layers": [...]}, ...}]'
        ) from None
    if not archs:
        raise SearchError(f"{path} ranks no candidate")
    return archs


def ship(
    supernet: SupernetOpt,
    target: Annotated[str, typer.Option("--target", "-t", help="NAME:latency=20ms,...")],
    arch: Annotated[str | None, typer.Option(help="An explicit arch (file or JSON).")] = None,
    from_search: Annotated[
        Path | None, typer.Option(help="A result.json written by `search`.")
    ] = None,
    task: TaskOpt = None,
    data_dir: DataDirOpt = None,
    predictors_dir: PredictorsOpt = Path("predictors"),
    bundles: BundlesOpt = Path("bundles"),
    fmt: FormatOpt = "int8",
    provider: ProviderOpt = None,
    threads: ThreadsOpt = None,
    spinning: SpinningOpt = None,
    seq_len: Annotated[int, typer.Option(min=1)] = 128,
    batch: Annotated[int, typer.Option(min=1)] = 1,
    min_metric: MinMetricOpt = None,
    allow_weak: AllowWeakOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Ship one sub-BERT (explicit, or a search's ranked candidates) as a checked bundle."""
    with user_errors():
        from yoco_deploy.deploy.budgets import BudgetError, parse_target
        from yoco_deploy.deploy.per_target import cost_model_for, load_supernet
        from yoco_deploy.deploy.ship import ship_target

        if (arch is None) == (from_search is None):
            raise BudgetError("pass exactly one of --arch and --from-search")
        t = parse_target(target)
        session = {"provider": provider, "threads": threads, "spinning": spinning}
        settings = _ship_settings(fmt, seq_len, batch, session, min_metric, allow_weak)
        quiet_transformers()
        net = load_supernet(supernet, task, data_dir)
        if arch is not None:
            candidates = [net.super_bert.space.validate(arch_arg(arch))]
        else:
            candidates = _ranked_archs(Path(from_search))
        cm = cost_model_for(t, net, predictors_dir, seq_len, batch, fmt)
        shipped = ship_target(
            net.super_bert,
            net.tokenizer,
            net.data,
            cm.target,
            cm,
            candidates,
            bundles,
            settings,
            say=lambda s: typer.echo(s, err=True),
        )
        _summary([shipped], bundles, as_json)


COMMANDS = {"search": search, "ship": ship}
