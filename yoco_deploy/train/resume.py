"""The trainer's resumable checkpoint, output_dir/checkpoint: weights, optimizer,
scheduler, torch's RNG and the loop's own state (step, theta, sampler RNG, candidates)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from yoco_deploy.errors import YocoError
from yoco_deploy.train.config import TrainConfig


class TrainError(YocoError):
    """Training cannot start or resume as asked."""


def save_checkpoint(
    out: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    config: TrainConfig,
    state: dict[str, Any],
) -> None:
    """Write out/checkpoint; ``state`` (JSON) comes back from :func:`load_checkpoint`."""
    from safetensors.torch import save_file

    tmp = out / "checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, tmp / "model.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save({"torch": torch.get_rng_state()}, tmp / "rng.pt")
    meta = {**state, "config": config.model_dump(mode="json")}
    (tmp / "state.json").write_text(json.dumps(meta))
    # a kill at any point leaves checkpoint/ or checkpoint.old/ whole
    final = out / "checkpoint"
    old = out / "checkpoint.old"
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    out: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    config: TrainConfig,
) -> dict[str, Any]:
    """Restore the weights, optimizer, scheduler and torch's RNG from out's checkpoint;
    return the ``state`` it was saved with."""
    from safetensors.torch import load_file

    ckpt = out / "checkpoint"
    if not ckpt.exists() and (out / "checkpoint.old").exists():
        ckpt = out / "checkpoint.old"  # interrupted while replacing the checkpoint
    if not ckpt.exists():
        raise TrainError(f"nothing to resume in {out} (no checkpoint/)")
    meta = json.loads((ckpt / "state.json").read_text())
    saved = meta.pop("config")
    if {k: v for k, v in saved.items() if k != "output_dir"} != {
        k: v for k, v in config.model_dump(mode="json").items() if k != "output_dir"
    }:
        raise TrainError(f"{out} was started with another config; resume with the same config file")
    model.load_state_dict(load_file(ckpt / "model.safetensors"))
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
    torch.set_rng_state(torch.load(ckpt / "rng.pt", weights_only=True)["torch"])
    return meta
