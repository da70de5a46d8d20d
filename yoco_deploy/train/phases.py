"""Progressive phases: which global steps each phase covers and the sub-space it trains."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from yoco_deploy.arch import Arch
from yoco_deploy.train.config import Phase, TrainConfig
from yoco_deploy.train.sng import SubSpace


@dataclass(frozen=True)
class PhasePlan:
    phase: Phase
    start: int  # first global step
    steps: int
    sub: SubSpace


def restrict(choices: tuple[int, ...], how: str) -> list[int]:
    top = sorted(choices, reverse=True)
    return {"max": top[:1], "top2": top[:2], "top3": top[:3], "all": top}[how]


def plan_phases(config: TrainConfig, space, steps_per_epoch: int) -> list[PhasePlan]:
    plans, start = [], 0
    for phase in config.phases:
        steps = max(1, math.ceil(phase.epochs * steps_per_epoch))
        sub = SubSpace.of(
            space,
            restrict(space.depth_choices, phase.depth),
            restrict(space.head_choices, phase.heads),
            restrict(space.ffn_choices, phase.ffn),
        )
        plans.append(PhasePlan(phase, start, steps, sub))
        start += steps
    return plans


def plan_at(plans: list[PhasePlan], step: int) -> PhasePlan:
    """The phase that trains ``step`` (the last one past the end)."""
    for plan in plans:
        if plan.start <= step < plan.start + plan.steps:
            return plan
    return plans[-1]


def phase_space(space, plan: PhasePlan):
    """The phase's sub-space as a search space of its own (its max and min sub-BERTs)."""
    return replace(
        space,
        depth_choices=tuple(space.depth_choices[i] for i in plan.sub.allowed[0]),
        head_choices=tuple(sorted({space.cells[i][0] for i in plan.sub.allowed[1]})),
        ffn_choices=tuple(sorted({space.cells[i][1] for i in plan.sub.allowed[1]})),
    )


def representative_archs(space, plans: list[PhasePlan] | None = None) -> dict[str, Arch]:
    """max, min and two uniform sub-BERTs in between, for per-phase evaluation; the max
    alone when no phase of ``plans`` trains another (a teacher's fine-tune: its cuts are
    untrained, and scoring them would only cost time)."""

    def mid(c, q):
        return c[round(q * (len(c) - 1))]

    out = {"max": space.max_arch()}
    if plans and all(phase_space(space, p).min_arch() == out["max"] for p in plans):
        return out
    out["min"] = space.min_arch()
    for q, name in ((2 / 3, "mid-large"), (1 / 3, "mid-small")):
        out[name] = Arch.uniform(
            mid(space.depth_choices, q), mid(space.head_choices, q), mid(space.ffn_choices, q)
        )
    return out
