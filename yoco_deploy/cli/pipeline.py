"""CLI commands for whole runs: `run PIPELINE.yaml` and the offline `quickstart`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from yoco_deploy.cli.common import (
    JsonOpt,
    print_json,
    quiet_transformers,
    table_console,
    user_errors,
)
from yoco_deploy.cli.summary import bundle_summary, print_summary

QUICKSTART = Path(__file__).parent.parent / "data" / "quickstart.yaml"


def _drive(pipeline, dry_run: bool, as_json: bool = False) -> None:
    from rich.table import Table

    from yoco_deploy.pipeline.run import PipelineRun

    runner = PipelineRun(pipeline, say=lambda s: typer.echo(s, err=True))
    if dry_run and as_json:
        print_json([{"stage": key, "status": status} for key, status in runner.plan()])
        return
    if dry_run:
        table = Table(title=f"plan for {pipeline.workdir}")
        table.add_column("stage")
        table.add_column("status")
        for key, status in runner.plan():
            table.add_row(key, status if status == "up to date" else f"will run ({status})")
        table_console().print(table)
        return
    quiet_transformers()
    runner.run()
    print_summary([bundle_summary(b) for b in runner.bundles()], as_json)
    runner.check_refused()  # after the summary of what did ship


def run(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML (see configs/pipeline-*.yaml).")],
    dry_run: Annotated[
        bool, typer.Option(help="Print the plan: what runs, what is up to date.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Teacher -> super-BERT -> profile -> fit -> search -> ship, for every target.

    Stages whose outputs are up to date are skipped; interrupted stages resume.
    """
    with user_errors():
        from yoco_deploy.pipeline.config import load_pipeline

        _drive(load_pipeline(pipeline), dry_run, as_json)


def quickstart(
    model: Annotated[str, typer.Option("--model", "-m", help="Base model.")] = "minilm",
    task: Annotated[str | None, typer.Option(help="A GLUE task (hub); default: built-in.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Work directory.")] = Path(
        "quickstart-out"
    ),
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            "-t",
            help="Ship these targets instead (repeat it), e.g. an edge and a server one: "
            "-t 'this-machine:latency=55%' -t 'this-machine:latency=60%@batch=16,seq=128,p=99'.",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the plan only.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The whole pipeline offline in minutes (what `make demo` runs).

    MiniLM and a built-in sentiment task of generated English sentences: fine-tunes the
    teacher, trains the super-BERT, profiles this machine, fits its latency predictor,
    searches two latency budgets (55% and 80% of the full model's latency) and ships a
    checked bundle for each. `--model bert-base-uncased --task sst2` runs the real thing
    where the hub is reachable. Run again with `--target`s on the same `--out`, it
    reuses the teacher and the super-BERT, profiles this machine at the targets' shapes
    too, and ships the new targets.
    """
    with user_errors():
        from yoco_deploy.pipeline.config import load_pipeline

        overrides: dict = {"model": model, "workdir": out}
        if task is not None:
            overrides.update(task=task, builtin_task=False, max_seq_len=128)
        if target:
            overrides["targets"] = list(target)
        _drive(load_pipeline(QUICKSTART, overrides), dry_run, as_json)


COMMANDS = {"run": run, "quickstart": quickstart}
