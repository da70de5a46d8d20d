"""CLI commands for stage II: search (and ship) for many targets at once, or ship one arch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from yoco_deploy.deploy.ship import ShipSettings

from yoco_deploy.cli.common import (
    JsonOpt,
    arch_arg,
    print_json,
    progress_bar,
    quiet_transformers,
    user_errors,
)
from yoco_deploy.cli.ship_options import with_ship_options

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


def _summary(shipped, bundles: Path, as_json: bool) -> None:
    """The bundles just shipped, printed; summary.json and the Pareto plot cover every
    bundle in the folder (a second ship into it once dropped the first from both)."""
    from yoco_deploy.cli.summary import bundle_summary, folder_bundles, print_summary
    from yoco_deploy.plots import pareto_plot
    from yoco_deploy.util.atomic import write_text

    print_summary([bundle_summary(s.path, s.manifest) for s in shipped], as_json)
    say = lambda s: typer.echo(s, err=True)  # noqa: E731
    every = folder_bundles(bundles, say)
    bundles.mkdir(parents=True, exist_ok=True)
    rows = [bundle_summary(path, m) for path, m in every]
    write_text(bundles / "summary.json", json.dumps(rows, indent=1))
    if every:
        plot = pareto_plot([m for _, m in every], bundles / "pareto.png")
        say(f"summary of {len(every)} bundles: {bundles / 'summary.json'}; Pareto plot: {plot}")


@with_ship_options
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
        str,
        typer.Option(
            help="A sample that breaks a budget: repair (ESNG and evolution: shrink it to the "
            "budget boundary with the cost model, no evaluation spent), skip (rank it last) "
            "or penalize (evaluate it, YOCO's reward)."
        ),
    ] = "repair",
    repair_log: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Set torn or edited lines of an existing search log aside first (every "
            "intact evaluation and a backup are kept).",
        ),
    ] = False,
    fresh: Annotated[
        bool,
        typer.Option(
            help="Start each target's search anew: an existing log is kept beside the new "
            "one (NAME.replaced-TIME), not replayed."
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
    shipping: Annotated[
        bool, typer.Option("--ship/--no-ship", help="Ship each target's winner as a bundle.")
    ] = True,
    bundles: BundlesOpt = Path("bundles"),
    as_json: JsonOpt = False,
    ship: ShipSettings | None = None,  # the ship options (with_ship_options)
) -> None:
    """Find the best sub-BERT for each target (YOCO stage II) and ship it.

    Each search is logged to OUT/TARGET/search-ALGO-seedN.jsonl; rerunning resumes it.
    A refused target (its budgets, its quality gate) does not stop the others; the
    command ends naming it, with exit 1.
    Example: yoco-deploy search --supernet runs/sst2/final -t x86-2c-ort-cpu-minilm:latency=8ms

    Several GPUs: accelerate launch --multi_gpu --num_processes 4 -m yoco_deploy.cli
    search ... (each generation's candidates are evaluated in parallel; one process logs
    and ships).
    """
    with user_errors():
        from accelerate import Accelerator

        from yoco_deploy.deploy.budgets import check_distinct, parse_target
        from yoco_deploy.deploy.per_target import DeployJob, attempt
        from yoco_deploy.deploy.search import SearchSettings
        from yoco_deploy.deploy.search_log import SearchLog
        from yoco_deploy.deploy.supernet import load_supernet, make_evaluator

        parsed = [(t, parse_target(t)) for t in target]
        check_distinct(parsed)  # named as written
        job = DeployJob(
            targets=tuple(t for _, t in parsed),
            search=SearchSettings(
                algo=algo, evaluations=evaluations, seed=seed,
                infeasible={"repair": "skip"}.get(infeasible, infeasible),
                repair=infeasible == "repair",
            ),
            ship=ship,
            shipping=shipping,
            predictors=predictors_dir,
            logs=out,
            bundles=bundles,
            cold=cold,
            calibrate=calibrate,
            fresh=fresh,
        )  # fmt: skip
        _check_outputs({"--out": out, "--bundles": bundles}, supernet, data_dir)
        quiet_transformers()
        net = load_supernet(supernet, task, data_dir)
        say = lambda s: typer.echo(s, err=True)  # noqa: E731
        models = job.cost_models(net, say)  # every target checked before any long work
        if repair_log:
            from yoco_deploy.runtime import repair_note

            for cm in models:
                log = job.log_path(cm)
                say(repair_note(log, SearchLog.set_aside(log)))
        accelerator = Accelerator()
        main = accelerator.is_main_process
        evaluator = make_evaluator(net, seed, accelerator)
        # one target refused (by its search log, its budgets or its quality gate) does
        # not cost the others: each is reported as it happens, all are named at the end
        refused: dict[str, str] = {}
        found = []
        for text, cm in zip(target, models, strict=True):  # every process searches alike
            label = cm.target.label()

            def one_search(cm=cm, label=label):
                with progress_bar(f"search {label}", enabled=main) as update:
                    progress = lambda d, n, e, u=update: u(d, n, e, "")  # noqa: E731
                    return job.run_search(net, cm, evaluator, progress, main)

            result = attempt(text, one_search, refused, say if main else lambda s: None)
            if result is not None:
                found.append((text, cm, result))
                if main:
                    _say_result(label, result, say)
        # no collective call after this point: the main process ships alone
        accelerator.wait_for_everyone()
        accelerator.end_training()
        if not main:
            return
        if not shipping:
            if as_json:
                print_json([_search_summary(cm, r) for _, cm, r in found])
            _check_refused(refused, len(target))
            return
        shipped = []
        for text, cm, r in found:
            archs = [c.arch for c in r.ranked]
            one = attempt(text, lambda cm=cm, a=archs: job.run_ship(net, cm, a, say), refused, say)
            shipped += [one] if one is not None else []
        _summary(shipped, bundles, as_json)
        _check_refused(refused, len(target))


def _check_outputs(outputs: dict[str, Path], *inputs: str | Path | None) -> None:
    """No output folder is the super-BERT, the data or the search result read."""
    from yoco_deploy.deploy.budgets import BudgetError
    from yoco_deploy.util.atomic import check_output

    for option, folder in outputs.items():
        check_output(option, folder, inputs, BudgetError)


def _check_refused(refused: dict[str, str], total: int) -> None:
    from yoco_deploy.deploy.per_target import TargetsRefused

    if refused:
        again = " ".join(f"-t {t!r}" for t in refused)
        raise TargetsRefused(refused, total, f"rerun with only {again} to retry them")


def _say_result(label: str, result, say) -> None:
    best = result.best
    if result.replaced_log:
        say(f"{label}: --fresh: the previous log is kept as {result.replaced_log}")
    if result.exhausted:
        say(
            f"{label}: the budgets leave only {result.evaluations} sub-BERTs that it could "
            "find; all were evaluated (fewer than --evaluations)"
        )
    say(f"{label}: best {best.arch.short()} search {best.fitness:.4f} rescore {best.rescore}")


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


def ranked_archs(path: Path) -> list:
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


@with_ship_options
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
    as_json: JsonOpt = False,
    ship: ShipSettings | None = None,  # the ship options (with_ship_options)
) -> None:
    """Ship one sub-BERT (explicit, or a search's ranked candidates) as a checked bundle."""
    with user_errors():
        from yoco_deploy.deploy.budgets import BudgetError, parse_target
        from yoco_deploy.deploy.per_target import DeployJob
        from yoco_deploy.deploy.supernet import load_supernet

        if (arch is None) == (from_search is None):
            raise BudgetError("pass exactly one of --arch and --from-search")
        one = parse_target(target)
        job = DeployJob((one,), ship=ship, predictors=predictors_dir, bundles=bundles)
        _check_outputs({"--bundles": bundles}, supernet, data_dir, from_search)
        quiet_transformers()
        net = load_supernet(supernet, task, data_dir)
        if arch is not None:
            candidates = [net.super_bert.space.validate(arch_arg(arch))]
        else:
            candidates = ranked_archs(Path(from_search))
        (cm,) = job.cost_models(net, searching=False)
        shipped = job.run_ship(net, cm, candidates, say=lambda s: typer.echo(s, err=True))
        _summary([shipped], bundles, as_json)


COMMANDS = {"search": search, "ship": ship}
