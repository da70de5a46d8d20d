"""What a search is asked and what it answers: its settings, the evaluator it is given,
the scored candidates, the result and the error."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from yoco_deploy.arch import Arch
from yoco_deploy.errors import YocoError
from yoco_deploy.train.evaluation import Evaluation

ALGOS = ("esng", "random", "evolution")


class SearchError(YocoError):
    """A search cannot run as asked."""


class Evaluator(Protocol):
    """The task metric and loss of a sub-BERT on split 'search' or 'rescore', as an
    ``Evaluation`` (a bare float is taken as a metric with no loss to break ties).

    An evaluator may also offer ``evaluate_many(archs, split) -> list[...]``: the search
    then hands it each generation's new candidates at once (one batch per generation, so
    several GPUs can score them in parallel: see ``deploy.ParallelEvaluator``).
    """

    def evaluate(self, arch: Arch, split: str) -> Evaluation | float: ...


def as_score(result: Evaluation | float) -> tuple[float, float]:
    """(metric, loss); the loss is NaN when the evaluator gives none."""
    if isinstance(result, Evaluation):
        return float(result.value), float(result.loss)
    return float(result), math.nan


@dataclass(frozen=True)
class SearchSettings:
    algo: str = "esng"
    evaluations: int = 100
    seed: int = 0
    lam: int = 4
    delta: float = 1.0
    warm_theta: list | None = None
    infeasible: str = "skip"  # or "penalize": YOCO's evaluate-and-penalise reward
    population: int = 16
    parents: int = 4
    mutation_prob: float = 0.3
    rescore_top: int = 5
    max_attempts: int = 200_000
    repair: bool = True  # ESNG and evolution: shrink infeasible samples to the boundary
    stagnation: int = 10  # ESNG: generations without a better candidate before tempering
    temper: float = 0.5  # ESNG: weight of the uniform distribution mixed into theta

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise SearchError(f"unknown --algo {self.algo!r}; choose from {', '.join(ALGOS)}")
        if self.infeasible not in ("skip", "penalize"):
            raise SearchError(
                f"unknown --infeasible {self.infeasible!r}; choose from repair, skip, penalize"
            )
        if self.evaluations < 1:
            raise SearchError("the evaluation budget must be at least 1")


@dataclass
class Scored:
    arch: Arch
    fitness: float
    costs: dict[str, float]
    rescore: float | None = None
    loss: float = math.nan  # on the search split, with the fitness

    def rank_key(self) -> tuple[float, float]:
        """Higher metric first; among ties, lower loss (NaN, unknown, last)."""
        return (-self.fitness, self.loss if math.isfinite(self.loss) else math.inf)


@dataclass
class SearchResult:
    ranked: list[Scored]  # feasible, best first (by the re-scored metric)
    evaluations: int
    log_path: Path | None
    history: list[float] = field(default_factory=list)  # best feasible fitness after each eval
    tempered: int = 0  # ESNG: times theta was mixed back towards uniform
    exhausted: bool = False  # ended before its budget: no new feasible sub-BERT turned up
    replaced_log: Path | None = None  # --fresh: where the log it replaced was moved

    @property
    def best(self) -> Scored:
        return self.ranked[0]
