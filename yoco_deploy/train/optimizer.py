"""The super-BERT's optimizer (AdamW, no decay on biases and LayerNorms) and its
per-phase learning-rate schedule."""

from __future__ import annotations

from functools import partial

import torch

from yoco_deploy.train.phases import PhasePlan, plan_at


def phase_lr(plans: list[PhasePlan], warmup_ratio: float, step: int) -> float:
    """Per phase: linear warm-up to the phase's lr, then linear decay to 0."""
    total_steps = sum(p.steps for p in plans)
    plan = plan_at(plans, min(step, total_steps - 1))
    i = step - plan.start
    warm = max(1, round(warmup_ratio * plan.steps))
    scale = (i + 1) / warm if i < warm else max(0.0, (plan.steps - i) / (plan.steps - warm + 1))
    return plan.phase.lr * scale


def build_optimizer(
    model: torch.nn.Module, weight_decay: float, plans: list[PhasePlan], warmup_ratio: float
):
    """(optimizer, scheduler); the scheduler's factor is the lr itself (base lr 1)."""
    no_decay = ("bias", "LayerNorm.weight")
    named = list(model.named_parameters())
    params = [
        {
            "params": [p for n, p in named if not any(k in n for k in no_decay)],
            "weight_decay": weight_decay,
        },
        {"params": [p for n, p in named if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(params, lr=1.0)
    schedule = partial(phase_lr, plans, warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return optimizer, scheduler
