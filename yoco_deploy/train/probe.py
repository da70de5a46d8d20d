"""How long one training step of a config takes on this machine: a few steps of the same
run, timed, for turning a wall-time budget (polish minutes, a benchmark's equal compute)
into a step count before the run's schedule is fixed."""

from __future__ import annotations

import tempfile
from pathlib import Path

from yoco_deploy.train.config import TrainConfig
from yoco_deploy.train.run_log import train_rows

PROBE_STEPS = 6


def seconds_per_step(config: TrainConfig, data=None, tokenizer=None, steps: int = PROBE_STEPS):
    """Seconds per training step of ``config`` (its first step, which warms up, excluded)."""
    from yoco_deploy.train.trainer import Trainer

    with tempfile.TemporaryDirectory(prefix="yoco-step-probe-") as tmp:
        probe = config.model_copy(update={"output_dir": Path(tmp), "log_every": 1})
        Trainer(probe, data, tokenizer, log=lambda _: None).train(stop_at=1 + steps)
        seconds = [r["train_s"] for r in train_rows(Path(tmp))]
    return (seconds[-1] - seconds[0]) / (len(seconds) - 1)
