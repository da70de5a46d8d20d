"""YOCO stage II: find the best sub-BERT under budgets, without retraining.

Three algorithms behind one interface and one log format, at equal evaluation budgets:
``esng`` (SNG over p_theta, warm-started from the super-BERT's theta or cold), ``random``
(uniform with rejection of infeasible samples) and ``evolution`` (HAT's: population,
parents, mutation, crossover). The search only knows what is injected: a cost model
(budgets, cheap) and an evaluator (task metric on the search split, expensive).

What keeps a search from collapsing onto a plateau (at a tight budget, where most
feasible sub-BERTs may tie at the majority-class score):

- **repair** (ESNG and evolution; on by default): an infeasible sample is shrunk to the
  budget boundary with the cost model (``repair.py``) before it is evaluated, so no
  evaluation is spent on it and no sample is wasted below the boundary. Random search
  stays uniform over the feasible set (rejection), the baseline it is meant to be.
- **ties broken by the loss**: one evaluation returns the metric and the loss on the same
  split; among equal metrics, the lower loss ranks first (in the SNG ranking, the
  evolution's parents and the final choice).
- **tempering** (ESNG): after ``stagnation`` generations without a better candidate,
  theta is mixed back towards uniform (``temper``), so a distribution stuck on a plateau
  explores again.

Without repair, infeasible candidates are not evaluated: for the SNG ranking they sort
below every feasible one by how far they break the budgets; ``infeasible="penalize"``
restores YOCO's evaluate-and-penalise reward, R = metric * (1 - (cost - C) /
(cost_max - C))^2. Every evaluation is appended to a JSONL log (``search_log.py``) with
the best so far; a rerun with the same log replays the deterministic trajectory from the
log's cached evaluations, so an interrupted search resumes exactly where it stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from yoco_deploy.arch import Arch
from yoco_deploy.deploy.evolution import crossover, mutate
from yoco_deploy.deploy.repair import repair
from yoco_deploy.deploy.search_log import SearchLog, log_inputs
from yoco_deploy.deploy.search_types import (
    ALGOS,
    Evaluator,
    Scored,
    SearchError,
    SearchResult,
    SearchSettings,
    as_score,
)
from yoco_deploy.space import SearchSpace, sample_arch
from yoco_deploy.train.sng import CategoricalSNG

__all__ = [
    "ALGOS",
    "Evaluator",
    "Scored",
    "Search",
    "SearchError",
    "SearchResult",
    "SearchSettings",
    "as_score",
]

# Weight of the loss in the SNG objective: below any metric difference a split of up to
# 10,000 examples can show (1e-4), so it only orders candidates whose metrics tie.
TIE_WEIGHT = 1e-6


class _Budget(Exception):
    """The evaluation budget is spent."""


class _Exhausted(Exception):
    """No new feasible sub-BERT turns up: the budgets leave fewer of them than the
    evaluation budget (the search then ends with what it found)."""


# Generations in a row without a new evaluation before the space counts as exhausted.
IDLE_GENERATIONS = 500


class Search:
    def __init__(
        self,
        space: SearchSpace,
        cost_model,
        evaluator: Evaluator,
        settings: SearchSettings,
        log_path: Path | None = None,
        progress: Callable[[int, int, float | None], None] | None = None,
        write_log: bool = True,
        inputs: Mapping[str, Any] | None = None,
        fresh: bool = False,
    ):
        """``inputs``: what the evaluator's scores depend on besides the space (the
        super-BERT's weights, the data), recorded in the log, which is
        replayed only for the same; ``fresh``: set an existing log aside, start anew."""
        self.space, self.cost, self.evaluator, self.s = space, cost_model, evaluator, settings
        self.rng = np.random.default_rng(settings.seed)
        # write_log is False on the non-main processes of a parallel search
        recorded = log_inputs(space, inputs) if log_path else None
        self.log = SearchLog(log_path, write_log, recorded, fresh)
        self.log_path = self.log.path
        self.progress = progress
        self.cache = self.log.read()
        self.fresh: dict[tuple[str, str], tuple[float, float]] = {}  # batched, not yet logged
        self.done: dict[str, Scored] = {}
        self.history: list[float] = []
        self.best_fitness = -math.inf
        self.tempered = 0
        self.exhausted = False
        self._idle, self._seen = 0, 0

    # ---- evaluation, logging, resuming --------------------------------------------------

    def _metric(self, arch: Arch, split: str) -> tuple[tuple[float, float], bool]:
        """((metric, loss), whether it came from the log)."""
        key = (arch.arch_id, split)
        if key in self.cache:
            return self.cache[key], True
        if key in self.fresh:
            value = self.fresh.pop(key)
        else:
            value = as_score(self.evaluator.evaluate(arch, split))
        self.cache[key] = value
        return value, False

    def _prefetch(self, archs: list[Arch], split: str = "search") -> None:
        """Score the new candidates among ``archs`` in one batch when the evaluator can;
        the sequential bookkeeping (budget, log, history) stays in ``evaluate``, so the
        trajectory is the same with or without batching."""
        many = getattr(self.evaluator, "evaluate_many", None)
        if many is None:
            return
        todo: dict[str, Arch] = {}  # in order: the ones evaluate() will count
        for arch in archs:
            if arch.arch_id in todo or (split == "search" and arch.arch_id in self.done):
                continue
            if split == "search" and self.s.infeasible == "skip" and not self.cost.feasible(arch):
                continue
            todo[arch.arch_id] = arch
        ordered = list(todo.values())
        if split == "search":  # logged ones count against the budget too
            ordered = ordered[: max(0, self.s.evaluations - len(self.done))]
        known = self.cache.keys() | self.fresh.keys()
        batch = [a for a in ordered if (a.arch_id, split) not in known]
        if batch:
            values = many(batch, split)
            for arch, value in zip(batch, values, strict=True):
                self.fresh[(arch.arch_id, split)] = as_score(value)

    def evaluate(self, arch: Arch) -> Scored:
        """Fitness and loss on the search split; counts once per distinct sub-BERT."""
        if arch.arch_id in self.done:
            return self.done[arch.arch_id]
        if len(self.done) >= self.s.evaluations:
            raise _Budget
        (fitness, loss), cached = self._metric(arch, "search")
        costs = self.cost.costs(arch)
        feasible = self.cost.feasible(arch)
        scored = self.done[arch.arch_id] = Scored(arch, fitness, costs, loss=loss)
        if feasible:
            self.best_fitness = max(self.best_fitness, fitness)
        self.history.append(self.best_fitness)
        if not cached:
            self.log.append(
                {
                    "kind": "eval",
                    "split": "search",
                    "n": len(self.done),
                    "algo": self.s.algo,
                    "arch_id": arch.arch_id,
                    "arch": arch.to_dict(),
                    "fitness": fitness,
                    "loss": None if math.isnan(loss) else loss,
                    "feasible": feasible,
                    "costs": costs,
                    "best_so_far": self.best_fitness,
                    "t": time.time(),
                }
            )
        if self.progress:
            self.progress(len(self.done), self.s.evaluations, None)
        return scored

    def objective(self, arch: Arch) -> float:
        """For ranking (lower is better): the metric, ties broken by the loss; infeasible
        candidates below every feasible one (or YOCO's penalised reward)."""
        violation = self.cost.violation(arch)
        if violation == 0:
            scored = self.evaluate(arch)
            tie = TIE_WEIGHT * scored.loss if math.isfinite(scored.loss) else 0.0
            return -scored.fitness + tie
        if self.s.infeasible == "penalize":
            return -self.evaluate(arch).fitness * self.cost.penalty(arch)
        return 1.0 + violation

    def _repair(self, arch: Arch) -> Arch:
        return repair(arch, self.space, self.cost.feasible, self.cost.seq_len)

    # ---- algorithms ---------------------------------------------------------------------

    def run(self) -> SearchResult:
        """Search until the evaluation budget is spent, or until no new feasible sub-BERT
        turns up (``exhausted``: the result holds every one found)."""
        self.cost.check_achievable()  # also what guarantees that repair ends feasible
        algo = {"esng": self._esng, "random": self._random, "evolution": self._evolution}
        with self.log.lock():
            self.log.start()
            self.cache = self.log.read()  # read again under the lock
            try:
                algo[self.s.algo]()
            except _Budget:  # the normal end: the evaluation budget is spent
                pass
            except _Exhausted:
                self.exhausted = True
            return self._finish()

    @staticmethod
    def repair_log(path: Path) -> int:
        """See ``SearchLog.repair``."""
        return SearchLog.repair(path)

    def _generation_done(self) -> None:
        """Count generations that evaluated nothing new; too many in a row: exhausted."""
        self._idle = 0 if len(self.done) > self._seen else self._idle + 1
        self._seen = len(self.done)
        if self._idle >= IDLE_GENERATIONS:
            raise _Exhausted

    def _esng(self) -> None:
        sng = CategoricalSNG(
            self.space, delta=self.s.delta, lam=self.s.lam, seed=int(self.rng.integers(2**31))
        )
        if self.s.warm_theta is not None:
            sng.load_state_dict(
                {"theta": self.s.warm_theta, "delta": self.s.delta, "lam": self.s.lam}
            )
        best, stale = math.inf, 0
        for _ in range(self.s.max_attempts // self.s.lam):
            archs = [self.space.decode(sng.sample_codes()) for _ in range(self.s.lam)]
            if self.s.repair:  # the repaired sub-BERT is the sample theta learns from
                archs = [self._repair(a) for a in archs]
            codes = [self.space.encode(a) for a in archs]
            self._prefetch(archs)
            values = [self.objective(a) for a in archs]
            sng.update(codes, values)
            self._generation_done()
            best, stale = (min(values), 0) if min(values) < best else (best, stale + 1)
            if self.s.stagnation and stale >= self.s.stagnation:
                sng.temper(self.s.temper)
                self.tempered, stale = self.tempered + 1, 0
        raise _Exhausted

    def _feasible_sample(self, draw: Callable[[], Arch]) -> Arch:
        for _ in range(self.s.max_attempts):
            arch = draw()
            if self.cost.feasible(arch):
                return arch
        raise _Exhausted

    def _candidate(self, draw: Callable[[], Arch]) -> Arch:
        """A feasible candidate from ``draw``: repaired, or by rejection without repair."""
        return self._repair(draw()) if self.s.repair else self._feasible_sample(draw)

    def _uniform(self) -> Arch:
        return sample_arch(self.space, self.rng)

    def _random(self) -> None:
        for _ in range(self.s.max_attempts // self.s.lam):
            archs = [self._feasible_sample(self._uniform) for _ in range(self.s.lam)]
            self._prefetch(archs)
            for arch in archs:
                self.evaluate(arch)
            self._generation_done()
        raise _Exhausted

    def _mutate(self, arch: Arch) -> Arch:
        return mutate(arch, self.space, self.rng, self.s.mutation_prob)

    def _crossover(self, a: Arch, b: Arch) -> Arch:
        return crossover(a, b, self.space, self.rng)

    def _evolution(self) -> None:
        s = self.s
        first = [self._candidate(self._uniform) for _ in range(s.population)]
        self._prefetch(first)
        population = [self.evaluate(arch) for arch in first]
        for _ in range(s.max_attempts):
            population.sort(key=Scored.rank_key)
            parents = [c.arch for c in population[: s.parents]]
            drawn = []
            for k in range(s.population - s.parents):
                if k % 2 == 0:
                    parent = parents[self.rng.integers(len(parents))]
                    draw = lambda parent=parent: self._mutate(parent)  # noqa: E731
                else:
                    i, j = self.rng.choice(len(parents), 2, replace=len(parents) < 2)
                    a, b = parents[i], parents[j]
                    draw = lambda a=a, b=b: self._mutate(self._crossover(a, b))  # noqa: E731
                drawn.append(self._candidate(draw))
            self._prefetch(drawn)
            children = [self.evaluate(arch) for arch in drawn]
            self._generation_done()
            population = population[: s.parents] + children
        raise _Exhausted

    # ---- re-scoring and the result ------------------------------------------------------

    def _finish(self) -> SearchResult:
        feasible = [c for c in self.done.values() if self.cost.feasible(c.arch)]
        if not feasible:
            raise SearchError(
                f"the search found no feasible sub-BERT in {self.s.max_attempts} samples: "
                "the budgets leave almost nothing of the space; loosen them"
            )
        feasible.sort(key=Scored.rank_key)
        top = feasible[: self.s.rescore_top]
        self._prefetch([c.arch for c in top], "rescore")
        rescore_loss = {}
        for c in top:  # a second, disjoint part of the search split picks among the best
            (c.rescore, loss), cached = self._metric(c.arch, "rescore")
            rescore_loss[c.arch.arch_id] = loss if math.isfinite(loss) else math.inf
            if not cached:
                self.log.append(
                    {
                        "kind": "rescore",
                        "split": "rescore",
                        "arch_id": c.arch.arch_id,
                        "arch": c.arch.to_dict(),
                        "fitness": c.rescore,
                        "loss": None if math.isnan(loss) else loss,
                        "search_fitness": c.fitness,
                        "t": time.time(),
                    }
                )
        top.sort(key=lambda c: (-c.rescore, rescore_loss[c.arch.arch_id]))
        ranked = top + feasible[self.s.rescore_top :]
        return SearchResult(
            ranked, len(self.done), self.log_path, self.history, self.tempered, self.exhausted,
            self.log.replaced,
        )  # fmt: skip
