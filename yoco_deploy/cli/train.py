"""CLI commands for stage I: finetune (the teacher) and train (the super-BERT)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from yoco_deploy.cli.common import JsonOpt, ModelOpt, print_json, quiet_transformers, user_errors

TaskOpt = Annotated[
    str, typer.Option(help="GLUE task: sst2, cola, mrpc, rte, stsb, qqp, qnli, mnli.")
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(help="Local data: a GLUE TSV directory, or CSV/JSON train/dev files."),
]


def finetune(
    model: ModelOpt,
    task: TaskOpt,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Run directory; the teacher lands in OUT/final.")
    ],
    data_dir: DataDirOpt = None,
    epochs: Annotated[float, typer.Option(min=0.01, help="Passes over train.")] = 3.0,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 2e-5,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    max_seq_len: Annotated[int, typer.Option(min=8)] = 128,
    max_train: Annotated[int | None, typer.Option(min=1, help="Seeded train subset.")] = None,
    seed: int = 0,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in OUT.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune the full model on a task: the teacher for super-BERT training.

    Example: yoco-deploy finetune -m minilm --task sst2 --data-dir SST-2/ --out runs/teacher
    """
    with user_errors():
        from yoco_deploy.train.config import finetune_settings, parse_config
        from yoco_deploy.train.trainer import Trainer

        settings = finetune_settings(
            epochs, lr, model=model, task=task, data_dir=data_dir, output_dir=out,
            max_train=max_train, max_seq_len=max_seq_len, batch_size=batch_size, seed=seed,
        )  # fmt: skip
        config = parse_config(settings)
        _check_output("--out", config)
        quiet_transformers()
        _train_and_end(Trainer(config, log=_note), resume, as_json)


def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML training config.")],
    resume: Annotated[bool, typer.Option(help="Continue from OUTPUT_DIR/checkpoint.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print the resolved config and exit.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train the super-BERT (YOCO stage I) as the config says.

    Progressive phases, knowledge distillation from the teacher, exploit-explore sampling
    with SNG updates; checkpoints every N steps and on Ctrl-C / SIGTERM.
    Multi-GPU: `accelerate launch -m yoco_deploy.cli.main train --config X.yaml`.
    """
    with user_errors():
        from yoco_deploy.train.config import load_config

        cfg = load_config(config)
        _check_before_work(cfg)
        _check_output("output_dir", cfg)
        if dry_run:
            typer.echo(cfg.model_dump_json(indent=2))
            return
        from yoco_deploy.train.trainer import Trainer

        quiet_transformers()
        _train_and_end(Trainer(cfg, log=_note), resume, as_json)


def _note(text: str) -> None:
    """Progress goes to stderr: stdout holds the result (--json) alone."""
    typer.echo(text, err=True)


def _check_before_work(cfg) -> None:
    """What --dry-run can check without loading weights: the task, the model's config,
    the space override and the sequence length against its positions."""
    from yoco_deploy.model.loading import load_config
    from yoco_deploy.space import SearchSpace
    from yoco_deploy.train.data import get_task

    get_task(cfg.task)
    space = SearchSpace.from_config(load_config(cfg.model), cfg.space)
    space.dims.check_seq_len(cfg.max_seq_len)


def _check_output(option: str, cfg) -> None:
    """The run writes OUT/final and OUT/checkpoint whole: not over the model, the teacher
    or the data it reads."""
    from yoco_deploy.train.config import ConfigError
    from yoco_deploy.util.atomic import check_output

    out = Path(cfg.output_dir)
    read = (cfg.model, cfg.teacher, cfg.data_dir)
    check_output(option, out, read, ConfigError, (out / "final", out / "checkpoint"))


def _train_and_end(trainer, resume: bool, as_json: bool = False) -> None:
    out = trainer.train(resume=resume)
    # under accelerate launch: leave the process group cleanly (gloo aborts otherwise)
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    if as_json and trainer.accelerator.is_main_process:
        rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        final = [r for r in rows if r.get("kind") == "eval" and r.get("phase") == "final"]
        print_json({"final": str(out / "final"), "evaluations": final})


COMMANDS = {"finetune": finetune, "train": train}
